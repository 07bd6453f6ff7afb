"""fit / predict_proba for the CNN methods, one surface for both training modes (on a cohort and positions in it).

- `frozen`: the backbone is frozen; its texture features are computed once per cohort (`features`) and only
  the head trains, on features standardised with the training subjects' statistics (`training.stacked`; the
  plain loop it equals is `training.head_loop`).
- `finetune`: the paper's protocol, the whole network trained (`training.finetune`).

Every fit builds its model, optimizer and scaler from scratch and seeds them from the config; fits and
predictions run on config.threads intra-op threads (osteoscreen.core.utils), whichever process runs them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from osteoscreen.core.precision import autocast
from osteoscreen.core.utils import intra_op_threads
from osteoscreen.data.cohort import Cohort
from osteoscreen.features.frozen import frozen_features
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.finetune import fit_finetune
from osteoscreen.training.fitted import FittedModel, check_both_classes, clinical_covariates
from osteoscreen.training.stacked import fit_frozen_folds


def fit(cohort: Cohort, train_indices: Sequence[int], config: TrainConfig) -> FittedModel:
    """Train a fresh model on the given subjects of the cohort (their labels must be known)."""
    if config.mode == "frozen":
        return fit_frozen_folds(cohort, [train_indices], config)[0]
    indices = np.asarray(train_indices)
    labels = torch.from_numpy(cohort.labels[indices])
    check_both_classes(labels)
    with intra_op_threads(config.threads):
        return fit_finetune(cohort, indices, labels, config)


def head_features(model: FittedModel, cohort: Cohort, indices: Sequence[int]) -> torch.Tensor:
    """[m, 8, D] what the model's head sees for the given subjects' plain views: frozen mode, their standardised
    texture features; fine-tune, `OctupletNet.patch_features` of patches rendered on the device (8 subjects per
    backbone call). Prediction and the novelty check both start from it."""
    indices = np.asarray(indices)
    config = model.config
    with torch.inference_mode(), intra_op_threads(config.threads):
        if model.net is None:
            features = frozen_features(cohort, config, backbone=model.backbone)[torch.from_numpy(indices), 0]
            return (features - model.feature_mean) / model.feature_std
        size = config.input_size(model.net.backbone)
        with autocast(config.precision, config.device):
            return torch.cat([model.net.patch_features(cohort.render(chunk, size, device=config.device))
                              for chunk in np.array_split(indices, max(1, len(indices) // 8))])


def predict_proba(model: FittedModel, cohort: Cohort, indices: Sequence[int], features: torch.Tensor | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(p_osteoporosis [m], group attention [m, 4] or None) for the given subjects, from their plain view;
    features: their `head_features`, when the caller has them already."""
    indices = np.asarray(indices)
    config = model.config
    features = head_features(model, cohort, indices) if features is None else features
    with torch.inference_mode(), intra_op_threads(config.threads):
        covariates = clinical_covariates(cohort, indices) if config.clinical else None
        if model.net is None:
            inputs = [features]
            if covariates is not None:
                inputs.append((covariates - model.covariate_mean) / model.covariate_std)
            output = model.head(*inputs)
        else:
            with autocast(config.precision, config.device):
                output = model.net.head_output(features, None if covariates is None else covariates.to(config.device))
    probability = output.logits.float().softmax(dim=1)[:, 1].cpu().numpy().astype(np.float64)
    attention = None if output.attention is None else output.attention.float().cpu().numpy().astype(np.float64)
    return probability, attention
