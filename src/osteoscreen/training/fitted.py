"""What every trainer shares: the fitted-model record and the small steps both training modes take the same way
(class weights, the covariates of +clinical heads and their scaler, the check for both classes, the shuffled
batches of an epoch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osteoscreen.core.errors import InputError
from osteoscreen.data.cohort import Cohort
from osteoscreen.models.backbones import Backbone
from osteoscreen.models.octuplet import OctupletNet
from osteoscreen.training.config import TrainConfig


@dataclass
class FittedModel:
    """A trained model. frozen: head + feature scaler (mean, std: [T]) + the frozen backbone (None: the one
    config names); finetune: the whole net, and its training curve (`history`: per epoch, the mean training loss
    and the training accuracy of the augmented batches, as the steps saw them)."""

    config: TrainConfig
    head: nn.Module
    net: OctupletNet | None = None
    feature_mean: torch.Tensor | None = None
    feature_std: torch.Tensor | None = None
    backbone: Backbone | None = None
    history: dict[str, list[float]] | None = None
    covariate_mean: torch.Tensor | None = None  # frozen +clinical models: the training subjects' covariate scaler
    covariate_std: torch.Tensor | None = None


def diverged(what: str, config: TrainConfig) -> InputError:
    """The error of a training that left non-finite numbers (a learning rate far too high; the texture feature of
    a randomly initialised backbone): it stops there instead of saving a model that answers nan for every
    radiograph. `what`: what was not finite, and when."""
    rates = f"lr_head {config.lr_head:g}"
    advice = "lower the learning rate"
    if config.mode == "finetune":
        rates = f"lr_backbone {config.lr_backbone:g}, {rates}, weights {config.weights}"
        advice = "lower the learning rates or start from pretrained backbone weights"
    return InputError(f"training diverged: {what} ({rates}); {advice}")


def class_weights(labels: torch.Tensor, enabled: bool) -> torch.Tensor | None:
    """Inverse class frequency per row of labels [..., n] -> [..., 2]; None when disabled."""
    if not enabled:
        return None
    counts = F.one_hot(labels, 2).sum(dim=-2).clamp(min=1).float()
    return counts.sum(dim=-1, keepdim=True) / (2.0 * counts)


def clinical_covariates(cohort: Cohort, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    """[m, 3] float32 covariates (age, female, male) of the given subjects for a +clinical model; every one of them
    needs age and sex."""
    covariates = cohort.covariates[np.asarray(indices)]
    missing = int(np.isnan(covariates).any(axis=1).sum())
    if missing:
        raise InputError(f"a +clinical method needs age and sex for every subject; {missing} of {len(covariates)} "
                         "lack them (columns age and sex of subjects.csv)")
    return torch.from_numpy(covariates).float()


def covariate_scale(covariates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over subjects of covariates [..., n, 3] -> ([..., 3], [..., 3]); a column that
    does not vary (one sex only) gets deviation 1."""
    std = covariates.std(dim=-2)
    return covariates.mean(dim=-2), torch.where(std > 1e-6, std, torch.ones_like(std))


def check_both_classes(labels: torch.Tensor) -> None:
    """labels [..., n]: every row needs a subject of each class."""
    if labels.shape[-1] < 2 or not bool(((labels == 0).any(-1) & (labels == 1).any(-1)).all()):
        raise InputError("training needs at least one subject of each class")


def batches(count: int, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A random order of count training rows cut into batches of batch_size (the last one shorter)."""
    order = torch.randperm(count, generator=generator)
    return order.split(batch_size)
