"""OctupletNet: one backbone shared by the 8 patches (a reshape, not 8 copies) and a fusion head."""

from __future__ import annotations

import torch
from torch import nn

from osteoscreen.core.errors import InputError
from osteoscreen.models.heads import HeadOutput

#: What the backbone gives the head per patch: `pooled` (its last layer, globally pooled: the paper's AlexNet
#: fc7) or `texture` (Backbone.texture_features, standardised by fixed statistics; see OctupletNet).
PATCH_FEATURES = ("pooled", "texture")


class OctupletNet(nn.Module):
    """patches [B, 8, 1, H, W] in [0, 1] -> backbone on [B*8, 1, H, W] -> features [B, 8, D] -> head.

    feature `pooled`: D = backbone.feature_dim. feature `texture`: D = backbone.texture_dim, each dimension
    standardised by `feature_mean` and `feature_std` ([D] buffers, saved with the weights), which
    `set_feature_scale` fixes once before training from the training subjects' patches (the texture statistics
    differ in scale by orders of magnitude between layers; unscaled, one learning rate cannot serve them all).

    covariates > 0 (a `+clinical` head): forward also takes the subjects' covariates, standardised by the buffers
    `covariate_mean` and `covariate_std`, fixed before training from the training subjects.

    BatchNorm layers (EfficientNet) keep their ImageNet running statistics in training mode too: the usual
    practice when fine-tuning on small batches, and what makes a batch processed in chunks give exactly the
    gradient of the whole batch (see training.finetune.finetune_step). AlexNet has no BatchNorm.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, feature: str = "pooled", covariates: int = 0):
        super().__init__()
        if feature not in PATCH_FEATURES:
            raise InputError(f"patch feature must be one of {', '.join(PATCH_FEATURES)}, got {feature!r}")
        self.backbone = backbone
        self.head = head
        self.feature = feature
        if feature == "texture":
            self.register_buffer("feature_mean", torch.zeros(backbone.texture_dim))
            self.register_buffer("feature_std", torch.ones(backbone.texture_dim))
        self.covariates = covariates
        if covariates:  # a +clinical head: the covariates' standardisation, fixed from the training subjects
            self.register_buffer("covariate_mean", torch.zeros(covariates))
            self.register_buffer("covariate_std", torch.ones(covariates))

    @staticmethod
    def feature_dim(backbone: nn.Module, feature: str) -> int:
        return backbone.texture_dim if feature == "texture" else backbone.feature_dim

    def per_patch(self, grey: torch.Tensor) -> torch.Tensor:
        """[N, 1, H, W] -> [N, D], the feature the head sees (standardised texture statistics, or pooled)."""
        if self.feature == "pooled":
            return self.backbone(grey)
        return (self.backbone.texture_features(grey) - self.feature_mean) / self.feature_std

    def patch_features(self, patches: torch.Tensor) -> torch.Tensor:
        batch, count = patches.shape[:2]
        return self.per_patch(patches.flatten(0, 1)).view(batch, count, -1)

    @torch.no_grad()
    def set_feature_scale(self, patches: torch.Tensor, chunk: int = 64) -> None:
        """Texture feature only: fix the standardisation from patches [n, 1, H, W] (the training subjects' plain
        views): mean and standard deviation of each raw texture dimension over them, in fp32, with the standard
        deviation floored at its median over dimensions. The floor matters: a dimension that barely varies at
        initialisation (a channel nearly dead on these patches) divided by its own tiny deviation amplifies the
        gradient into the backbone by the same factor, fine-tuning wakes the channel up, and the standardised
        value and the loss blow up (seen on a training fold: loss 0.2 at epoch 11, then 286 to 1844). With the
        floor no dimension is amplified more than a typical one."""
        if self.feature != "texture":
            return
        raw = torch.cat([self.backbone.texture_features(part).float() for part in patches.split(chunk)])
        std = raw.std(dim=0)
        self.feature_mean.copy_(raw.mean(dim=0))
        self.feature_std.copy_(std.clamp(min=max(1e-6, float(std.median()))))

    def train(self, mode: bool = True) -> OctupletNet:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def head_output(self, features: torch.Tensor, covariates: torch.Tensor | None = None) -> HeadOutput:
        """The head on per-patch features [B, 8, D] (`patch_features`); covariates [B, C] raw (age, female,
        male) for a +clinical head, standardised here."""
        if not self.covariates:
            return self.head(features)
        return self.head(features, (covariates - self.covariate_mean) / self.covariate_std)

    def forward(self, patches: torch.Tensor, covariates: torch.Tensor | None = None) -> HeadOutput:
        """patches [B, 8, 1, H, W]; covariates [B, C] raw, for a +clinical head."""
        return self.head_output(self.patch_features(patches), covariates)

    def parameter_groups(self, lr_backbone: float, lr_head: float, weight_decay: float) -> list[dict]:
        """SGD parameter groups: the pretrained backbone at lr_backbone, everything else at lr_head."""
        return [{"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": lr_backbone,
                 "weight_decay": weight_decay, "name": "backbone"},
                {"params": list(self.head.parameters()), "lr": lr_head, "weight_decay": weight_decay,
                 "name": "head"}]
