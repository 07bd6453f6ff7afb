"""Fusion heads over the 8 per-patch features, registered by name in HEADS.

A head is an nn.Module class constructed as `cls(dim, hidden, activation)` (D = dim features per patch; hidden
width; the attention activation, for heads that have one) whose forward maps features [B, 8, D] to
HeadOutput(logits [B, 2], attention [B, 4] over GROUPS or None) and whose final layer is a Linear named `fc` over
its fused representation Φ (ClinicalHead adds the covariates there). A new head is one such class plus its line
in HEADS; every command, estimator and model file then knows it.

Input: features [B, 8, D] in LANDMARKS order (group-major, right then left).
- `concat`: Φ = cat(F1..F4) -> fc (the paper's "CNN w/o attention"); no attention (None).
- `group-attention`: the paper's module. e_g = ReLU(fc_g(F_g)) per group, cat -> fc -> ReLU -> fc -> 4 scores
  -> softmax or sigmoid = s [B, 4]; Φ = cat(s_g · F_g) -> fc.
- `abmil`: attention-based MIL pooling (Ilse et al. 2018): a = softmax_k(w^T tanh(V h_k)), z = Σ a_k h_k -> fc.
- `gated-abmil`: the gated variant: a = softmax_k(w^T (tanh(V h_k) ⊙ sigmoid(U h_k))).
Here F_g = f_right + f_left is the group sum [B, D]. MIL heads attend over the 8 patches ([B, 8]); their
group attention [B, 4] is the per-group sum. `ClinicalHead` wraps any of them for the `+clinical` methods.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import GROUPS, LANDMARKS, SIDES

CLINICAL_SUFFIX = "+clinical"  # a method name: a head whose final layer also sees age and sex (ClinicalHead)
ATTENTION_ACTIVATIONS = ("softmax", "sigmoid")


class HeadOutput(NamedTuple):
    logits: torch.Tensor  # [B, 2]
    attention: torch.Tensor | None  # [B, 4] over GROUPS


def check_patch_count(features: torch.Tensor) -> None:
    """features [B, 8, D]: one feature per landmark patch."""
    if features.shape[1] != len(LANDMARKS):
        raise InputError(f"expected features of {len(LANDMARKS)} patches, got {features.shape[1]}")


def group_sums(features: torch.Tensor) -> torch.Tensor:
    """[B, 8, D] -> [B, 4, D]: right + left feature of each landmark group (LANDMARKS is group-major, right
    then left). Written as one add of the two strided halves: a sum over a dimension of 2 is a reduction kernel,
    measured 5x slower in bf16."""
    check_patch_count(features)
    return features[:, 0::2] + features[:, 1::2]


class ConcatHead(nn.Module):
    """Φ = cat(F1..F4) -> fc: the paper's "CNN w/o attention" (hidden and activation unused; no attention)."""

    def __init__(self, dim: int, hidden: int = 128, activation: str = "softmax"):
        super().__init__()
        self.fc = nn.Linear(len(GROUPS) * dim, 2)

    def forward(self, features: torch.Tensor) -> HeadOutput:
        return HeadOutput(self.fc(group_sums(features).flatten(1)), None)


class GroupAttentionHead(nn.Module):
    """The paper's attention module over the 4 group features (softmax or sigmoid weights)."""

    def __init__(self, dim: int, hidden: int = 128, activation: str = "softmax"):
        super().__init__()
        if activation not in ATTENTION_ACTIVATIONS:
            raise InputError(f"attention activation must be one of {', '.join(ATTENTION_ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.activation = activation
        self.group_fc = nn.ModuleList(nn.Linear(dim, hidden) for _ in GROUPS)
        self.score = nn.Sequential(nn.Linear(len(GROUPS) * hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, len(GROUPS)))
        self.fc = nn.Linear(len(GROUPS) * dim, 2)

    def forward(self, features: torch.Tensor) -> HeadOutput:
        groups = group_sums(features)  # [B, 4, D]
        embedded = torch.cat([torch.relu(fc(groups[:, g])) for g, fc in enumerate(self.group_fc)], dim=1)
        scores = self.score(embedded)
        weights = scores.softmax(dim=1) if self.activation == "softmax" else scores.sigmoid()
        # fc(Φ) with Φ = cat(s_g · F_g), as sum_g s_g (W_g F_g) + b: the same value without the [B, 4, D] product
        per_group = torch.einsum("bgd,cgd->bgc", groups, self.fc.weight.view(2, len(GROUPS), -1))  # [B, 4, 2]
        logits = (weights.unsqueeze(1) @ per_group).squeeze(1) + self.fc.bias
        return HeadOutput(logits, weights)


class MILHead(nn.Module):
    """Attention-based MIL pooling over the 8 patches (Ilse et al. 2018); activation unused (softmax over patches).
    Its group attention is the per-group sum of the patch weights."""

    gated = False

    def __init__(self, dim: int, hidden: int = 128, activation: str = "softmax"):
        super().__init__()
        self.attention_v = nn.Linear(dim, hidden)
        self.attention_u = nn.Linear(dim, hidden) if self.gated else None
        self.attention_w = nn.Linear(hidden, 1)
        self.fc = nn.Linear(dim, 2)

    def forward(self, features: torch.Tensor) -> HeadOutput:
        check_patch_count(features)
        hidden = torch.tanh(self.attention_v(features))
        if self.attention_u is not None:
            hidden = hidden * torch.sigmoid(self.attention_u(features))
        patch_weights = self.attention_w(hidden).squeeze(-1).softmax(dim=1)  # [B, 8]
        pooled = (patch_weights.unsqueeze(1) @ features).squeeze(1)  # sum_k a_k h_k: [B, D]
        group_weights = patch_weights.view(-1, len(GROUPS), len(SIDES)).sum(dim=2)
        return HeadOutput(self.fc(pooled), group_weights)


class GatedMILHead(MILHead):
    """The gated variant: a = softmax_k(w^T (tanh(V h_k) ⊙ sigmoid(U h_k)))."""

    gated = True


class ClinicalHead(nn.Module):
    """A head whose final layer also sees the subject's standardised covariates c [B, C] (age, female, male):
    logits = head(features) + W_c (s c). Every head's final layer is linear in its fused representation Φ, so this
    is exactly fc(cat(Φ, s c)), the covariates concatenated to Φ before the final layer.

    s = sqrt(dim Φ / C) gives the C covariates the same total variance as the dim Φ standardised features (2,048
    for concat on EfficientNet-Lite0's texture), and W_c starts at zero. Unscaled, the covariates were 3 inputs
    among 2,051: on images that carry nothing and an age that does, concat+clinical fitted its training subjects
    through the image features and missed the age (AUROC 0.38); scaled, 0.985 (the cohort of tests/test_clinical)."""

    def __init__(self, head: nn.Module, covariates: int = 3):
        super().__init__()
        self.head = head
        self.covariate_fc = nn.Linear(covariates, 2, bias=False)
        nn.init.zeros_(self.covariate_fc.weight)
        self.scale = math.sqrt(head.fc.in_features / covariates)  # every head's final layer `fc` reads Φ

    def forward(self, features: torch.Tensor, covariates: torch.Tensor) -> HeadOutput:
        output = self.head(features)
        extra = self.covariate_fc(self.scale * covariates.to(output.logits.dtype))
        return output._replace(logits=output.logits + extra)


#: The heads by name (see the module docstring for what a head class provides).
HEADS: dict[str, type[nn.Module]] = {"concat": ConcatHead, "group-attention": GroupAttentionHead, "abmil": MILHead,
                                     "gated-abmil": GatedMILHead}
CLINICAL_HEADS = tuple(head + CLINICAL_SUFFIX for head in HEADS)


def head_of(method: str) -> tuple[str, bool] | None:
    """(head, with covariates) of a CNN method ("group-attention", "group-attention+clinical"); None otherwise."""
    head = method.removesuffix(CLINICAL_SUFFIX)
    return (head, head != method) if head in HEADS else None


def method_name(head: str, clinical: bool) -> str:
    return head + (CLINICAL_SUFFIX if clinical else "")


def build_head(name: str, dim: int, hidden: int = 128, activation: str = "softmax", clinical: bool = False
               ) -> nn.Module:
    """A fresh head of the named kind over D = dim features; with clinical, wrapped to see the covariates too."""
    if name not in HEADS:
        raise InputError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")
    head = HEADS[name](dim, hidden, activation)
    return ClinicalHead(head) if clinical else head
