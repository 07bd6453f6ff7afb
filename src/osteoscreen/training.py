"""fit / predict_proba for the CNN methods, one surface for both training modes.

- `finetune`: the paper's protocol. The whole OctupletNet trains with SGD (backbone lr 1e-4, head lr 1e-2,
  momentum 0.9, weight decay 1e-4), batch 32, 100 epochs, cross-entropy, patches augmented by random stretch
  and horizontal flip at every step.
- `frozen`: the backbone is frozen in eval mode. Texture features of V views per subject (view 0 plain, the
  rest augmented) are computed once per cohort (memoised, and cached on disk keyed by data hash, backbone,
  weights, taps, views and seed) and shared by all folds; only the head trains, on features standardised with
  the training subjects' mean and standard deviation.

Every call to `fit` builds its model, optimizer and scaler from scratch and seeds them from the config.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osteoscreen.atomic import atomic_path
from osteoscreen.data.dataset import Dataset
from osteoscreen.data.patches import PatchConfig, random_augmentation, render_views
from osteoscreen.data.subject_patches import SubjectPatches, load_subject_patches
from osteoscreen.errors import InputError
from osteoscreen.landmarks import LANDMARKS
from osteoscreen.models.backbones import BACKBONES, Backbone
from osteoscreen.models.heads import HEADS, build_head
from osteoscreen.models.octuplet import OctupletNet

MODES = ("frozen", "finetune")
FEATURE_BATCH = 64  # patches per backbone call when extracting frozen features


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a fit. Defaults: the paper's optimiser and schedule, the frozen mode."""

    head: str = "group-attention"
    mode: str = "frozen"
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    attention: str = "softmax"
    hidden: int = 128
    epochs: int = 100
    batch_size: int = 32
    lr_backbone: float = 1e-4
    lr_head: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    class_weighting: bool = False
    views: int = 4
    taps: tuple[int, ...] | None = None
    seed: int = 0
    patch: PatchConfig = field(default_factory=PatchConfig)

    def __post_init__(self):
        checks = [(self.head in HEADS, f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}"),
                  (self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}"),
                  (self.backbone in BACKBONES, f"unknown backbone {self.backbone!r}; choose one of "
                                               f"{', '.join(BACKBONES)}"),
                  (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
                  (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
                  (self.views >= 1, f"views must be >= 1, got {self.views}"),
                  (min(self.lr_backbone, self.lr_head) > 0, "learning rates must be positive")]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def to_dict(self) -> dict:
        return asdict(self)


class Cohort:
    """Subjects prepared for training and prediction: context crops in memory, frozen features memoised.

    patches: one SubjectPatches per subject; data_hash identifies the data for the on-disk feature cache.
    """

    def __init__(self, patches: Sequence[SubjectPatches], patch_config: PatchConfig, data_hash: str | None = None,
                 cache_dir: Path | None = None):
        self.patches = list(patches)
        self.patch_config = patch_config
        self.data_hash = data_hash
        self.cache_dir = cache_dir
        self._features: dict[str, torch.Tensor] = {}

    @classmethod
    def from_dataset(cls, dataset: Dataset, patch_config: PatchConfig, cache_dir: Path | None = None,
                     data_hash: str | None = None, progress: Callable = iter) -> Cohort:
        """Load every subject's crops; with a cache_dir, frozen features are cached under the data's hash."""
        patches = [load_subject_patches(s, patch_config) for s in progress(dataset.subjects)]
        if cache_dir is not None and data_hash is None:
            data_hash = dataset.content_hash()
        return cls(patches, patch_config, data_hash, cache_dir)

    def __len__(self) -> int:
        return len(self.patches)

    @property
    def labels(self) -> np.ndarray:
        return np.array([p.label for p in self.patches], dtype=np.int64)

    @property
    def padded_patches(self) -> int:
        return sum(p.padded for p in self.patches)

    def render(self, indices: Sequence[int], out_size: int, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """[b, 8, 1, out, out] patches of the given subjects: plain, or augmented when a generator is given."""
        views = []
        for index in indices:
            crops = torch.from_numpy(self.patches[index].crops)
            stretch, flip = (None, None) if generator is None else random_augmentation(
                len(LANDMARKS), self.patch_config, generator)
            views.append(render_views(crops, self.patch_config.context, out_size, stretch, flip))
        return torch.stack(views).unsqueeze(2)

    def frozen_features(self, config: TrainConfig, progress: Callable = iter) -> torch.Tensor:
        """[N, V, 8, T] texture features of every subject's V views (view 0 plain); computed once."""
        backbone = Backbone(config.backbone, config.weights, config.taps)
        key = _feature_key(self, config, backbone)
        if key in self._features:
            return self._features[key]
        cache_file = None if self.cache_dir is None or self.data_hash is None else (
            Path(self.cache_dir) / f"features-{key[:24]}.safetensors")
        if cache_file is not None and cache_file.exists():
            from safetensors.torch import load_file

            features = load_file(cache_file)["features"]
        else:
            features = self._extract(backbone, config, progress)
            if cache_file is not None:
                from safetensors.torch import save_file

                with atomic_path(cache_file) as partial:
                    save_file({"features": features.contiguous()}, str(partial))
        self._features[key] = features
        return features

    def _extract(self, backbone: Backbone, config: TrainConfig, progress: Callable) -> torch.Tensor:
        backbone = backbone.eval().to(memory_format=torch.channels_last)
        out = torch.empty(len(self), config.views, len(LANDMARKS), backbone.texture_dim)
        with torch.inference_mode():
            for index in progress(range(len(self))):
                generator = torch.Generator().manual_seed(config.seed * 1_000_003 + index)
                views = [self.render([index], backbone.input_size)[0]]
                views += [self.render([index], backbone.input_size, generator)[0] for _ in range(config.views - 1)]
                patches = torch.cat(views).contiguous(memory_format=torch.channels_last)  # [V*8, 1, H, W]
                chunks = [backbone.texture_features(chunk) for chunk in patches.split(FEATURE_BATCH)]
                out[index] = torch.cat(chunks).view(config.views, len(LANDMARKS), -1)
        return out


def _feature_key(cohort: Cohort, config: TrainConfig, backbone: Backbone) -> str:
    identity = {"data": cohort.data_hash or id(cohort), "backbone": config.backbone,
                "weights": backbone.weights_source, "taps": backbone.taps, "views": config.views,
                "seed": config.seed, "patch": asdict(cohort.patch_config), "format": 1}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class FittedModel:
    """A trained model. frozen: head + feature scaler (mean, std: [T]); finetune: the whole net."""

    config: TrainConfig
    head: nn.Module
    net: OctupletNet | None = None
    feature_mean: torch.Tensor | None = None
    feature_std: torch.Tensor | None = None


def _class_weights(labels: torch.Tensor, enabled: bool) -> torch.Tensor | None:
    if not enabled:
        return None
    counts = torch.bincount(labels, minlength=2).clamp(min=1).float()
    return counts.sum() / (2.0 * counts)


def fit(cohort: Cohort, train_indices: Sequence[int], config: TrainConfig) -> FittedModel:
    """Train a fresh model on the given subjects of the cohort (their labels must be known)."""
    indices = np.asarray(train_indices)
    labels = torch.from_numpy(cohort.labels[indices])
    if len(indices) < 2 or len(torch.unique(labels)) < 2:
        raise InputError("training needs at least one subject of each class")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    weight = _class_weights(labels, config.class_weighting)
    if config.mode == "frozen":
        return _fit_frozen(cohort, indices, labels, config, generator, weight)
    return _fit_finetune(cohort, indices, labels, config, generator, weight)


def _batches(count: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(count, generator=generator)
    return order.split(batch_size)


class _single_thread:
    """Small heads train about twice as fast on one thread (no fork/join per tiny op)."""

    def __enter__(self):
        self.previous = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.previous)


def _fit_frozen(cohort, indices, labels, config, generator, weight) -> FittedModel:
    features = cohort.frozen_features(config)[torch.from_numpy(indices)]  # [n, V, 8, T]
    with _single_thread():
        return _train_head(features, indices, labels, config, generator, weight)


def _train_head(features, indices, labels, config, generator, weight) -> FittedModel:
    mean = features.mean(dim=(0, 1, 2))
    std = features.std(dim=(0, 1, 2)).clamp(min=1e-6)
    features = (features - mean) / std
    head = build_head(config.head, features.shape[-1], config.hidden, config.attention)
    optimizer = torch.optim.SGD(head.parameters(), lr=config.lr_head, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    head.train()
    for _ in range(config.epochs):
        views = torch.randint(0, config.views, (len(indices),), generator=generator)
        for batch in _batches(len(indices), config.batch_size, generator):
            loss = F.cross_entropy(head(features[batch, views[batch]]).logits, labels[batch], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return FittedModel(config, head.eval(), None, mean, std)


def _fit_finetune(cohort, indices, labels, config, generator, weight) -> FittedModel:
    backbone = Backbone(config.backbone, config.weights, config.taps)
    net = OctupletNet(backbone, build_head(config.head, backbone.feature_dim, config.hidden, config.attention))
    optimizer = torch.optim.SGD(net.parameter_groups(config.lr_backbone, config.lr_head, config.weight_decay),
                                momentum=config.momentum)
    net.train()
    for _ in range(config.epochs):
        for batch in _batches(len(indices), config.batch_size, generator):
            patches = cohort.render(indices[batch.numpy()], backbone.input_size, generator)
            loss = F.cross_entropy(net(patches).logits, labels[batch], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return FittedModel(config, net.head, net.eval())


def predict_proba(model: FittedModel, cohort: Cohort, indices: Sequence[int]
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(p_osteoporosis [m], group attention [m, 4] or None) for the given subjects, from their plain view."""
    indices = np.asarray(indices)
    with torch.inference_mode():
        if model.net is None:
            features = cohort.frozen_features(model.config)[torch.from_numpy(indices), 0]
            output = model.head((features - model.feature_mean) / model.feature_std)
        else:
            outputs = [model.net(cohort.render(chunk, model.net.backbone.input_size))
                       for chunk in np.array_split(indices, max(1, len(indices) // 8))]
            output = type(outputs[0])(*(None if outputs[0][k] is None else torch.cat([o[k] for o in outputs])
                                        for k in range(3)))
    probability = output.logits.softmax(dim=1)[:, 1].numpy().astype(np.float64)
    attention = None if output.attention is None else output.attention.numpy().astype(np.float64)
    return probability, attention
