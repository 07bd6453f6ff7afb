"""The fast path of frozen mode: the heads of many folds trained as one stacked, vmapped computation.

Training sets of equal size are stacked (up to FOLD_CHUNK at a time): the heads' parameters get a leading fold
axis and one vmapped forward/backward serves them all. Every fold gets the initialisation, view draws and batch
order that the plain loop (`training.head_loop.fit_head`) gives it alone, so its result equals that loop's up to
float summation order (tested), and does not depend on which folds share a batch. With precision bf16 the head
steps run under bf16 autocast on a bf16 copy of the features (parameters and optimiser fp32).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from osteoscreen.core.precision import autocast
from osteoscreen.core.utils import intra_op_threads, seeded
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
    diverged,
)

FOLD_CHUNK = 70  # folds whose heads train as one stacked computation (measured: docs/performance.md)


def fit_frozen_folds(cohort: Cohort, train_sets: Sequence[Sequence[int]], config: TrainConfig
                     ) -> list[FittedModel]:
    """One frozen-mode model per training set, trained together; returns them in the order given.

    Training sets of equal size are stacked (up to FOLD_CHUNK at a time) and trained by one vmapped step; every
    fold gets the initialisation, view draws and batch order that the plain loop (head_loop.fit_head) gives that
    set alone, so the results do not depend on which folds share a batch (up to float summation order).
    """
    features = frozen_features(cohort, config)
    labels = torch.from_numpy(cohort.labels)
    by_size: dict[int, list[int]] = {}
    for position, indices in enumerate(train_sets):
        by_size.setdefault(len(indices), []).append(position)
    models: list[FittedModel | None] = [None] * len(train_sets)
    for positions in by_size.values():
        for start in range(0, len(positions), FOLD_CHUNK):
            chunk = positions[start:start + FOLD_CHUNK]
            index = torch.from_numpy(np.stack([np.asarray(train_sets[p], dtype=np.int64) for p in chunk]))
            check_both_classes(labels[index])
            covariates = clinical_covariates(cohort, index.flatten()).view(*index.shape, -1) if config.clinical \
                else None
            with intra_op_threads(config.threads):
                fitted = _train_stacked_heads(features, index, labels, config, covariates)
            for position, model in zip(chunk, fitted, strict=True):
                models[position] = model
    return models


def _standardised_folds(features: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """features [N, V, 8, T], index [F, n] -> (x [F, n, V, 8, T], mean [F, T], std [F, T]): each fold's training
    features standardised with the mean and (unbiased) standard deviation of its own training subjects.

    The moments come from per-subject sums and sums of squares in float64: one pass over the cohort instead of
    one per fold.
    """
    flat = features.flatten(1, 2).double()  # [N, V*8, T]
    sums, squares = flat.sum(dim=1), flat.square().sum(dim=1)  # [N, T]
    count = index.shape[1] * flat.shape[1]
    mean = sums[index].sum(dim=1) / count
    variance = (squares[index].sum(dim=1) - count * mean.square()) / (count - 1)
    mean, std = mean.float(), variance.clamp(min=0).sqrt().float().clamp(min=1e-6)
    x = features[index]
    x.sub_(mean[:, None, None, None]).div_(std[:, None, None, None])
    return x, mean, std


def _train_stacked_heads(features: torch.Tensor, index: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
                         covariates: torch.Tensor | None = None) -> list[FittedModel]:
    """features [N, V, 8, T]; index [F, n] training subjects of F folds -> F fitted heads. covariates [F, n, 3]
    (+clinical heads): each fold's training subjects' covariates, standardised here by that fold's moments.

    With precision bf16 the steps run under bf16 autocast on a bf16 copy of the standardised features (the
    parameters, gradients and optimiser stay fp32); the batched matrix products are the heads' bulk.
    Stacked Linear weights are stored [F, in, out] and handed to the head as [F, out, in] views: that is the
    layout a vmapped Linear's weight gradient comes out in, so neither backward nor the SGD step has to copy it.
    """
    from torch.func import functional_call, vmap

    folds, count = index.shape
    device = config.device
    x, mean, std = _standardised_folds(features, index)
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
    x = x.to(device, dtype).flatten(1, 2)  # [F, n*V, 8, T]
    y = labels[index].to(device)  # [F, n]
    weight = class_weights(y, config.class_weighting)  # [F, 2] or None
    generator = torch.Generator().manual_seed(config.seed)  # on the CPU: the same draws on every device
    with seeded(config.seed):
        head = build_head(config.head, features.shape[-1], config.hidden, config.attention, config.clinical)
    head = head.to(device)
    storage = {name: _stacked_layout(p.detach().expand(folds, *p.shape)).contiguous().requires_grad_()
               for name, p in head.named_parameters()}
    optimizer = torch.optim.SGD(list(storage.values()), lr=config.lr_head, momentum=config.momentum,
                                weight_decay=config.weight_decay, fused=True)
    covariate_mean = covariate_std = c = None
    if covariates is not None:
        covariate_mean, covariate_std = covariate_scale(covariates)  # [F, 3] each
        c = ((covariates - covariate_mean[:, None]) / covariate_std[:, None]).to(device)  # [F, n, 3]

    def fold_loss(params, fold_x, fold_c, fold_y, fold_weight):
        logits = functional_call(head, params, (fold_x,) if fold_c is None else (fold_x, fold_c)).logits
        return F.cross_entropy(logits.float(), fold_y, weight=fold_weight)

    step_loss = vmap(fold_loss, in_dims=(0, 0, 0 if c is not None else None, 0, None if weight is None else 0))
    for _ in range(config.epochs):
        views = torch.randint(0, config.views, (count,), generator=generator)
        for batch in batches(count, config.batch_size, generator):
            rows = batch.to(device)
            samples = (batch * config.views + views[batch]).to(device)  # (subject, view) of each row, every fold
            params = {name: _stacked_layout(leaf.to(dtype)) for name, leaf in storage.items()}
            with autocast(config.precision, device):
                batch_c = None if c is None else c[:, rows]
                loss = step_loss(params, x.index_select(1, samples), batch_c, y[:, rows], weight).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finite = torch.stack([leaf.isfinite().flatten(1).all(dim=1) for leaf in storage.values()]).all(dim=0)  # [F]
    if not bool(finite.all()):
        which = f" in {int((~finite).sum())} of {folds} folds" if folds > 1 else ""
        raise diverged(f"the head's weights were not finite after {config.epochs} epochs{which}", config)
    models = []
    for fold in range(folds):
        fold_head = copy.deepcopy(head).cpu()  # heads predict from the CPU-held features
        fold_head.load_state_dict({name: _stacked_layout(leaf)[fold].detach().cpu() for name, leaf in storage.items()})
        models.append(FittedModel(config, fold_head.eval(), None, mean[fold].cpu(), std[fold].cpu(),
                                  covariate_mean=None if c is None else covariate_mean[fold],
                                  covariate_std=None if c is None else covariate_std[fold]))
    return models


def _stacked_layout(parameter: torch.Tensor) -> torch.Tensor:
    """A stacked Linear weight [F, out, in] <-> its storage [F, in, out] (a transposed view); others unchanged."""
    return parameter.transpose(1, 2) if parameter.dim() == 3 else parameter
