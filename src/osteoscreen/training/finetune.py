"""Fine-tune mode: the paper's protocol, the whole OctupletNet trained.

SGD (backbone lr 1e-4, head lr 1e-2, momentum 0.9, weight decay 1e-4), batch 32, 100 epochs, cross-entropy,
patches augmented by random stretch and horizontal flip at every step, rendered on the training device a batch
at a time (`Cohort.render`). The head sees each patch's `patch_feature`: standardised texture statistics
(default) or the backbone's pooled last layer (the paper's; docs/method.md says why it is not the default). Each
step runs in bf16 autocast (where the hardware has native bf16, see `precision`) on channels-last tensors;
`native_res` feeds patches at their own resolution (patch_px, 100) instead of upsampling to 224. The fitted model
keeps its training curve.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from osteoscreen.core.precision import autocast
from osteoscreen.data.cohort import COVARIATE_NAMES, Cohort
from osteoscreen.models.backbones import Backbone
from osteoscreen.models.heads import build_head
from osteoscreen.models.octuplet import OctupletNet
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fitted import (
    FittedModel,
    batches,
    class_weights,
    clinical_covariates,
    covariate_scale,
    diverged,
)

CUDA_CHUNK_FACTOR = 4  # a GPU's memory holds 4x the CPU chunk (EfficientNet: a whole 256-patch batch, ~10 GiB)


def finetune_step(net: OctupletNet, optimizer: torch.optim.Optimizer, patches: torch.Tensor, labels: torch.Tensor,
                  weight: torch.Tensor | None, precision: str, covariates: torch.Tensor | None = None
                  ) -> tuple[float, int]:
    """One SGD step of the whole network: patches [B, 8, 1, H, W] in [0, 1], labels [B]; returns (the loss, how
    many of the B subjects the network classified right in this forward pass).

    Forward passes run under bf16 autocast when precision is bf16 (parameters and the loss stay fp32); the
    backbone converts its input to channels-last, the layout oneDNN's convolutions are fastest in. The batch goes
    through the network in chunks of at most the backbone's `train_chunk` patches (half that in fp32) whose
    gradients accumulate: exactly the whole batch's gradient (the loss is a sum over subjects; BatchNorm
    statistics are frozen), with activation memory bounded by the chunk (on a CUDA device CUDA_CHUNK_FACTOR times
    larger: fewer, larger kernels).
    """
    device = patches.device.type
    chunk_patches = net.backbone.train_chunk // (1 if precision == "bf16" else 2)  # fp32 activations: twice the bytes
    chunk_patches *= CUDA_CHUNK_FACTOR if device == "cuda" else 1
    per_chunk = max(1, chunk_patches // patches.shape[1])
    normaliser = len(labels) if weight is None else weight[labels].sum()
    optimizer.zero_grad(set_to_none=True)
    total, correct = torch.zeros((), device=patches.device), torch.zeros((), device=patches.device, dtype=torch.long)
    covariate_chunks = [None] * len(labels.split(per_chunk)) if covariates is None else covariates.split(per_chunk)
    for chunk, chunk_labels, chunk_covariates in zip(patches.split(per_chunk), labels.split(per_chunk),
                                                     covariate_chunks, strict=True):
        with autocast(precision, device):
            logits = net(chunk, chunk_covariates).logits
        loss = F.cross_entropy(logits.float(), chunk_labels, weight=weight, reduction="sum") / normaliser
        loss.backward()
        total += loss.detach()
        correct += (logits.detach().argmax(dim=1) == chunk_labels).sum()
    optimizer.step()
    loss, right = torch.stack([total, correct.to(total.dtype)]).tolist()  # one synchronisation per step
    return loss, int(right)


def build_finetune_net(config: TrainConfig) -> tuple[OctupletNet, torch.optim.Optimizer]:
    """A fresh OctupletNet on config.device (channels-last) and its SGD with the two learning rates."""
    backbone = Backbone(config.backbone, config.weights, config.taps)
    head = build_head(config.head, OctupletNet.feature_dim(backbone, config.patch_feature), config.hidden,
                      config.attention, config.clinical)
    net = OctupletNet(backbone, head, config.patch_feature, len(COVARIATE_NAMES) if config.clinical else 0)
    net = net.to(config.device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameter_groups(config.lr_backbone, config.lr_head, config.weight_decay),
                                momentum=config.momentum, fused=True)  # one pass over the weights per step
    return net, optimizer


@contextlib.contextmanager
def own_global_state(config: TrainConfig):
    """The block may seed torch's global generators (initialisation, dropout) and let cuDNN pick its fastest
    convolutions for the fixed shapes of every step; the caller's generator states and cuDNN flag come back after."""
    devices = [torch.device(config.device).index or 0] if config.device.startswith("cuda") else []
    benchmark = torch.backends.cudnn.benchmark
    with torch.random.fork_rng(devices=devices):
        torch.backends.cudnn.benchmark = bool(devices)
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = benchmark


def finetune_steps(train_size: int, config: TrainConfig) -> int:
    """Optimiser steps of one fine-tune fit on train_size subjects."""
    return config.epochs * -(-train_size // config.batch_size)


def time_finetune_step(cohort: Cohort, config: TrainConfig) -> float:
    """Seconds of one fine-tune step at config.batch_size on this machine, as the training loop takes it:
    augmented patches rendered on the device, one SGD step (median of 2 after a warm-up)."""
    import time

    with own_global_state(config):
        net, optimizer = build_finetune_net(config)
        net.train()
        size = config.input_size(net.backbone)
        generator = torch.Generator().manual_seed(config.seed)
        indices = np.resize(np.arange(len(cohort)), config.batch_size)
        labels = torch.from_numpy(cohort.labels[indices]).to(config.device)
        covariates = clinical_covariates(cohort, indices).to(config.device) if config.clinical else None
        times = []
        for _ in range(3):
            start = time.perf_counter()
            patches = cohort.render(indices, size, generator, config.device)
            finetune_step(net, optimizer, patches, labels, None, config.precision, covariates)  # synchronises
            times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def fit_finetune(cohort: Cohort, indices: np.ndarray, labels: torch.Tensor, config: TrainConfig) -> FittedModel:
    """The paper's protocol on the given subjects (labels [n] theirs): a fresh OctupletNet, SGD with two learning
    rates, augmented batches rendered on the device, and the per-epoch training curve. Initialisation and dropout
    draw from torch's global generator seeded with config.seed, restored for the caller afterwards."""
    with own_global_state(config):
        torch.manual_seed(config.seed)
        return _fit_finetune(cohort, indices, labels, config)


def _fit_finetune(cohort: Cohort, indices: np.ndarray, labels: torch.Tensor, config: TrainConfig) -> FittedModel:
    generator = torch.Generator().manual_seed(config.seed)
    weight = class_weights(labels, config.class_weighting)
    weight = None if weight is None else weight.to(config.device)
    net, optimizer = build_finetune_net(config)
    size = config.input_size(net.backbone)
    net.eval()
    with autocast(config.precision, config.device):
        net.set_feature_scale(cohort.render(indices, size, device=config.device).flatten(0, 1))
    covariates = clinical_covariates(cohort, indices).to(config.device) if config.clinical else None
    if covariates is not None:
        mean, std = covariate_scale(covariates)
        net.covariate_mean.copy_(mean)
        net.covariate_std.copy_(std)
    labels = labels.to(config.device)
    net.train()
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    for _ in range(config.epochs):
        loss_sum = correct = 0.0
        for batch in batches(len(indices), config.batch_size, generator):
            patches = cohort.render(indices[batch.numpy()], size, generator, config.device)
            loss, right = finetune_step(net, optimizer, patches, labels[batch], weight, config.precision,
                                        None if covariates is None else covariates[batch.to(config.device)])
            loss_sum, correct = loss_sum + loss * len(batch), correct + right
        if not math.isfinite(loss_sum):
            raise diverged(f"the training loss was {loss_sum} in epoch {len(history['loss']) + 1} of {config.epochs}",
                           config)
        history["loss"].append(round(loss_sum / len(indices), 6))
        history["accuracy"].append(round(correct / len(indices), 6))
    return FittedModel(config, net.head, net.eval(), history=history)
