"""Frozen mode, one fold, as a plain loop: the reference the stacked fast path (`training.stacked`) is tested
against, and the readable statement of what it computes.

The backbone is frozen; its texture features of V views per subject (`features.frozen_features`) are
standardised with the training subjects' mean and (unbiased) standard deviation, and only the head trains: for
every epoch, each subject contributes one of its V views (drawn at random), in shuffled batches, with the paper's
SGD and cross-entropy. The random draws come in the order the stacked path draws them: the head's initialisation
from torch's global generator seeded with the config's seed, then per epoch the views and the batch order from a
CPU generator with the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from osteoscreen.core.utils import seeded
from osteoscreen.data.cohort import Cohort
from osteoscreen.features.frozen import frozen_features
from osteoscreen.models.heads import build_head
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fitted import (
    FittedModel,
    batches,
    check_both_classes,
    class_weights,
    clinical_covariates,
    covariate_scale,
)


def fit_head(cohort: Cohort, train: Sequence[int], config: TrainConfig) -> FittedModel:
    """A frozen-mode model (head and feature scaler) trained on the given subjects, in fp32 on the CPU."""
    train = torch.from_numpy(np.asarray(train, dtype=np.int64))
    features = frozen_features(cohort, config)[train]  # [n, V, 8, T]
    labels = torch.from_numpy(cohort.labels)[train]  # [n]
    check_both_classes(labels)
    mean = features.double().mean(dim=(0, 1, 2)).float()  # [T]
    std = features.double().std(dim=(0, 1, 2)).float().clamp(min=1e-6)
    x = (features - mean) / std
    covariates = covariate_mean = covariate_std = None
    if config.clinical:
        covariates = clinical_covariates(cohort, train.numpy())  # [n, 3]
        covariate_mean, covariate_std = covariate_scale(covariates)
        covariates = (covariates - covariate_mean) / covariate_std
    weight = class_weights(labels, config.class_weighting)  # [2] or None

    generator = torch.Generator().manual_seed(config.seed)
    with seeded(config.seed):
        head = build_head(config.head, features.shape[-1], config.hidden, config.attention, config.clinical)
    optimizer = torch.optim.SGD(head.parameters(), lr=config.lr_head, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        views = torch.randint(0, config.views, (len(train),), generator=generator)  # one view per subject
        for batch in batches(len(train), config.batch_size, generator):
            inputs = (x[batch, views[batch]],) if covariates is None else (x[batch, views[batch]], covariates[batch])
            loss = F.cross_entropy(head(*inputs).logits, labels[batch], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return FittedModel(config, head.eval(), None, mean, std, covariate_mean=covariate_mean,
                       covariate_std=covariate_std)
