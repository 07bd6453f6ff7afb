"""OctupletNet: one backbone shared by the 8 patches (a reshape, not 8 copies) and a fusion head."""

from __future__ import annotations

import torch
from torch import nn

from osteoscreen.models.heads import HeadOutput


class OctupletNet(nn.Module):
    """patches [B, 8, 1, H, W] in [0, 1] -> backbone on [B*8, 1, H, W] -> features [B, 8, D] -> head.

    BatchNorm layers (EfficientNet) keep their ImageNet running statistics in training mode too: the usual
    practice when fine-tuning on small batches, and what makes a batch processed in chunks give exactly the
    gradient of the whole batch (see training.finetune_step). AlexNet has no BatchNorm.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def patch_features(self, patches: torch.Tensor) -> torch.Tensor:
        batch, count = patches.shape[:2]
        return self.backbone(patches.flatten(0, 1)).view(batch, count, -1)

    def train(self, mode: bool = True) -> OctupletNet:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, patches: torch.Tensor) -> HeadOutput:
        return self.head(self.patch_features(patches))

    def parameter_groups(self, lr_backbone: float, lr_head: float, weight_decay: float) -> list[dict]:
        """SGD parameter groups: the pretrained backbone at lr_backbone, everything else at lr_head."""
        return [{"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": lr_backbone,
                 "weight_decay": weight_decay, "name": "backbone"},
                {"params": list(self.head.parameters()), "lr": lr_head, "weight_decay": weight_decay,
                 "name": "head"}]
