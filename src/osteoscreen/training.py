"""fit / predict_proba for the CNN methods, one surface for both training modes.

- `finetune`: the paper's protocol. The whole OctupletNet trains with SGD (backbone lr 1e-4, head lr 1e-2,
  momentum 0.9, weight decay 1e-4), batch 32, 100 epochs, cross-entropy, patches augmented by random stretch
  and horizontal flip at every step, rendered on the training device a batch at a time (`Cohort.render`).
  The head sees each patch's `patch_feature`: standardised texture statistics (default) or the backbone's pooled
  last layer (the paper's; docs/method.md says why it is not the default). Each step runs in bf16 autocast
  (where the hardware has native bf16, see `precision`) on channels-last tensors; `native_res` feeds patches at
  their own resolution (patch_px, 100) instead of upsampling to 224. The fitted model keeps its training curve.
- `frozen`: the backbone is frozen in eval mode. Texture features of V views per subject (view 0 plain, the
  rest augmented) are computed once per cohort (memoised, and cached on disk keyed by data hash, backbone,
  weights, taps, views, seed, precision and resolution) and shared by all folds; only the head trains, on
  features standardised with the training subjects' mean and standard deviation. `fit_frozen_folds` trains the
  heads of many folds at once: their parameters are stacked on a leading fold axis and one vmapped
  forward/backward serves them all; each fold gets what `fit` alone would give it. With precision bf16 the
  head steps run under bf16 autocast on a bf16 copy of the features (parameters and optimiser fp32); features
  are extracted by a fused copy of the backbone (`Backbone.for_inference`) in small batches.

Every fit builds its model, optimizer and scaler from scratch and seeds them from the config.
"""

from __future__ import annotations

import copy
import functools
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
from osteoscreen.covariates import COVARIATE_NAMES, covariate_matrix
from osteoscreen.data.dataset import Dataset
from osteoscreen.data.patches import PatchConfig, random_augmentation, render_views
from osteoscreen.data.subject_patches import SubjectPatches, load_subject_patches
from osteoscreen.errors import InputError
from osteoscreen.landmarks import LANDMARKS
from osteoscreen.models.backbones import BACKBONES, Backbone
from osteoscreen.models.heads import HEADS, build_head
from osteoscreen.models.octuplet import PATCH_FEATURES, OctupletNet
from osteoscreen.parallel import thread_map
from osteoscreen.precision import PRECISIONS, autocast, resolve_precision

MODES = ("frozen", "finetune")
DEVICES = ("auto", "cpu", "cuda")
CPU_RENDER_SUBJECTS = 4  # subjects per resampling call on the CPU (measured: see Cohort.render)
FEATURE_BATCH = 8  # patches per backbone call extracting frozen features: small calls keep activations in cache
# (EfficientNet-Lite0, bf16, 2240 patches on the 2-core VM: 8.0 s at 8, 11.0 s at 32, 15.6 s at 64)


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
    precision: str = "auto"
    device: str = "auto"
    native_res: bool = False
    patch_feature: str = "texture"
    clinical: bool = False  # the head's final layer also sees age and sex (the `+clinical` methods)
    patch: PatchConfig = field(default_factory=PatchConfig)

    def __post_init__(self):
        """Validates every field; resolves precision and device `auto` to what this machine runs."""
        checks = [(self.head in HEADS, f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}"),
                  (self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}"),
                  (self.backbone in BACKBONES, f"unknown backbone {self.backbone!r}; choose one of "
                                               f"{', '.join(BACKBONES)}"),
                  (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
                  (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
                  (self.views >= 1, f"views must be >= 1, got {self.views}"),
                  (min(self.lr_backbone, self.lr_head) > 0, "learning rates must be positive"),
                  (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
                  (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
                  (self.patch_feature in PATCH_FEATURES, f"patch feature must be one of {', '.join(PATCH_FEATURES)}"
                                                         f", got {self.patch_feature!r}")]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.device == "auto":
            object.__setattr__(self, "device", "cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available to this torch build")
        object.__setattr__(self, "precision", resolve_precision(self.precision, self.device))

    def input_size(self, backbone: Backbone) -> int:
        """Side in px of the patches fed to the backbone: the backbone's 224, or patch_px with native_res."""
        return self.patch.patch_px if self.native_res else backbone.input_size

    def to_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=4)
def frozen_backbone(name: str, weights: str, taps: tuple[int, ...] | None) -> Backbone:
    """The frozen-mode backbone of a config, built once per process (building one reads and hashes its weights
    file, about 80 ms; every fold's fit and prediction asks for it). Frozen backbones are never trained."""
    return Backbone(name, weights, taps).eval()


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
        self._device_crops: dict[str, tuple[dict[int, torch.Tensor], list[tuple[int, int]]]] = {}

    @classmethod
    def from_dataset(cls, dataset: Dataset, patch_config: PatchConfig) -> Cohort:
        """Every subject's crops of an already loaded dataset, in memory (no feature cache on disk); `cv` and
        `train` use `load_dataset_with_patches`, which decodes each radiograph only once."""
        patches = thread_map(lambda subject: load_subject_patches(subject, patch_config), dataset.subjects)
        return cls(patches, patch_config)

    def __len__(self) -> int:
        return len(self.patches)

    def __getstate__(self) -> dict:
        """Pickled for worker processes without the device copies (each process uploads its own)."""
        return {**self.__dict__, "_device_crops": {}}

    @property
    def labels(self) -> np.ndarray:
        return np.array([p.label for p in self.patches], dtype=np.int64)

    @property
    def covariates(self) -> np.ndarray:
        """[N, 3] age, female, male per subject (covariates.covariate_matrix; NaN rows where missing)."""
        return covariate_matrix(self.patches)

    @property
    def padded_patches(self) -> int:
        return sum(p.padded for p in self.patches)

    def render(self, indices: Sequence[int], out_size: int, generator: torch.Generator | None = None,
               device: str | torch.device = "cpu") -> torch.Tensor:
        """[b, 8, 1, out, out] float32 patches of the given subjects, on `device`: plain, or augmented when a
        generator is given.

        The augmentation is drawn on the CPU from the generator, subject by subject in the order given (so a
        seed gives the same draws on every device), and the batch is resampled from crops uploaded to the device
        once (`device_crops`): on a GPU in one call, on the CPU CPU_RENDER_SUBJECTS subjects per call (one call for
        32 subjects at 224 px, 51 MB of output, runs out of cache: 153 ms against 68 ms in calls of 4). Per subject
        this equals `render_views` of that subject alone.
        """
        count = len(LANDMARKS)
        stretch = flip = None
        if generator is not None:
            draws = [random_augmentation(count, self.patch_config, generator) for _ in indices]
            stretch, flip = torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])
        stacks, where = self.device_crops(device)
        out = torch.empty(len(indices), count, out_size, out_size, device=device)
        by_size: dict[int, list[tuple[int, int]]] = {}
        for position, index in enumerate(indices):
            size, row = where[index]
            by_size.setdefault(size, []).append((position, row))
        for size, group in by_size.items():
            per_call = len(group) if torch.device(device).type == "cuda" else CPU_RENDER_SUBJECTS
            for start in range(0, len(group), per_call):
                items = group[start:start + per_call]
                positions = torch.tensor([p for p, _ in items])
                rows = torch.tensor([r for _, r in items], device=stacks[size].device)
                patches = (positions[:, None] * count + torch.arange(count)).flatten()
                views = render_views(stacks[size].index_select(0, rows).flatten(0, 1), self.patch_config.context,
                                     out_size, None if stretch is None else stretch[patches],
                                     None if flip is None else flip[patches])
                out[positions.to(out.device)] = views.view(len(items), count, out_size, out_size)
        return out.unsqueeze(2)

    def device_crops(self, device: str | torch.device) -> tuple[dict[int, torch.Tensor], list[tuple[int, int]]]:
        """Every subject's context crops on `device`, uploaded on first use: ({crop side S: [n_S, 8, S, S]},
        [(S, row) per subject]). Subjects share one stack when their crops have the same side (always, unless
        --patch-mm meets differing pixel spacings)."""
        key = str(torch.device(device))
        if key not in self._device_crops:
            where, members = [], {}
            for subject in self.patches:
                rows = members.setdefault(subject.crops.shape[-1], [])
                where.append((subject.crops.shape[-1], len(rows)))
                rows.append(subject.crops)
            stacks = {size: torch.from_numpy(np.stack(rows)).to(device) for size, rows in members.items()}
            self._device_crops[key] = (stacks, where)
        return self._device_crops[key]

    def frozen_features(self, config: TrainConfig, progress: Callable = iter, backbone: Backbone | None = None
                        ) -> torch.Tensor:
        """[N, V, 8, T] fp32 texture features of every subject's V views (view 0 plain); computed once.

        backbone: a loaded one (a saved model's); by default the one config names, with its weights.
        """
        backbone = backbone or frozen_backbone(config.backbone, config.weights, config.taps)
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
        backbone = backbone.for_inference().to(config.device)  # fused afresh: the backbone may have changed
        size = config.input_size(backbone)
        out = torch.empty(len(self), config.views, len(LANDMARKS), backbone.texture_dim)
        with torch.inference_mode(), autocast(config.precision, config.device):
            for index in progress(range(len(self))):
                generator = torch.Generator().manual_seed(config.seed * 1_000_003 + index)
                views = [self.render([index], size, device=config.device)[0]]
                views += [self.render([index], size, generator, config.device)[0] for _ in range(config.views - 1)]
                patches = torch.cat(views)  # [V*8, 1, H, W]
                chunks = [backbone.texture_features(chunk).float().cpu() for chunk in patches.split(FEATURE_BATCH)]
                out[index] = torch.cat(chunks).view(config.views, len(LANDMARKS), -1)
        return out


def _feature_key(cohort: Cohort, config: TrainConfig, backbone: Backbone) -> str:
    identity = {"data": cohort.data_hash or id(cohort), "backbone": config.backbone,
                "weights": backbone.weights_source, "taps": backbone.taps, "views": config.views,
                "seed": config.seed, "patch": asdict(cohort.patch_config), "precision": config.precision,
                "size": config.input_size(backbone), "format": 5}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


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


def _class_weights(labels: torch.Tensor, enabled: bool) -> torch.Tensor | None:
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


def _covariate_scale(covariates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over subjects of covariates [..., n, 3] -> ([..., 3], [..., 3]); a column that
    does not vary (one sex only) gets deviation 1."""
    std = covariates.std(dim=-2)
    return covariates.mean(dim=-2), torch.where(std > 1e-6, std, torch.ones_like(std))


def _check_both_classes(labels: torch.Tensor) -> None:
    """labels [..., n]: every row needs a subject of each class."""
    if labels.shape[-1] < 2 or not bool(((labels == 0).any(-1) & (labels == 1).any(-1)).all()):
        raise InputError("training needs at least one subject of each class")


def fit(cohort: Cohort, train_indices: Sequence[int], config: TrainConfig) -> FittedModel:
    """Train a fresh model on the given subjects of the cohort (their labels must be known)."""
    if config.mode == "frozen":
        return fit_frozen_folds(cohort, [train_indices], config)[0]
    indices = np.asarray(train_indices)
    labels = torch.from_numpy(cohort.labels[indices])
    _check_both_classes(labels)
    return _fit_finetune(cohort, indices, labels, config)


def _batches(count: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(count, generator=generator)
    return order.split(batch_size)


class intra_op_threads:
    """Run with a given number of intra-op threads (tiny head steps are fastest on one: no fork/join)."""

    def __init__(self, count: int):
        self.count = count

    def __enter__(self):
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.count)

    def __exit__(self, *exc):
        torch.set_num_threads(self.previous)


FOLD_CHUNK = 70  # folds whose heads train as one stacked computation (measured: docs/performance.md)


def fit_frozen_folds(cohort: Cohort, train_sets: Sequence[Sequence[int]], config: TrainConfig
                     ) -> list[FittedModel]:
    """One frozen-mode model per training set, trained together; returns them in the order given.

    Training sets of equal size are stacked (up to FOLD_CHUNK at a time) and trained by one vmapped step; every
    fold gets the initialisation, view draws and batch order that `fit` on that set alone gives it, so the
    results do not depend on which folds share a batch (up to float summation order).
    """
    features = cohort.frozen_features(config)
    labels = torch.from_numpy(cohort.labels)
    by_size: dict[int, list[int]] = {}
    for position, indices in enumerate(train_sets):
        by_size.setdefault(len(indices), []).append(position)
    models: list[FittedModel | None] = [None] * len(train_sets)
    for positions in by_size.values():
        for start in range(0, len(positions), FOLD_CHUNK):
            chunk = positions[start:start + FOLD_CHUNK]
            index = torch.from_numpy(np.stack([np.asarray(train_sets[p], dtype=np.int64) for p in chunk]))
            _check_both_classes(labels[index])
            covariates = clinical_covariates(cohort, index.flatten()).view(*index.shape, -1) if config.clinical \
                else None
            with intra_op_threads(1 if len(chunk) == 1 else torch.get_num_threads()):
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
    weight = _class_weights(y, config.class_weighting)  # [F, 2] or None
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # on the CPU: the same draws on every device
    head = build_head(config.head, features.shape[-1], config.hidden, config.attention, config.clinical).to(device)
    storage = {name: _stacked_layout(p.detach().expand(folds, *p.shape)).contiguous().requires_grad_()
               for name, p in head.named_parameters()}
    optimizer = torch.optim.SGD(list(storage.values()), lr=config.lr_head, momentum=config.momentum,
                                weight_decay=config.weight_decay, fused=True)
    covariate_mean = covariate_std = c = None
    if covariates is not None:
        covariate_mean, covariate_std = _covariate_scale(covariates)  # [F, 3] each
        c = ((covariates - covariate_mean[:, None]) / covariate_std[:, None]).to(device)  # [F, n, 3]

    def fold_loss(params, fold_x, fold_c, fold_y, fold_weight):
        logits = functional_call(head, params, (fold_x,) if fold_c is None else (fold_x, fold_c)).logits
        return F.cross_entropy(logits.float(), fold_y, weight=fold_weight)

    step_loss = vmap(fold_loss, in_dims=(0, 0, 0 if c is not None else None, 0, None if weight is None else 0))
    for _ in range(config.epochs):
        views = torch.randint(0, config.views, (count,), generator=generator)
        for batch in _batches(count, config.batch_size, generator):
            rows = batch.to(device)
            samples = (batch * config.views + views[batch]).to(device)  # (subject, view) of each row, every fold
            params = {name: _stacked_layout(leaf.to(dtype)) for name, leaf in storage.items()}
            with autocast(config.precision, device):
                batch_c = None if c is None else c[:, rows]
                loss = step_loss(params, x.index_select(1, samples), batch_c, y[:, rows], weight).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
    if config.device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest convolutions
    optimizer = torch.optim.SGD(net.parameter_groups(config.lr_backbone, config.lr_head, config.weight_decay),
                                momentum=config.momentum, fused=True)  # one pass over the weights per step
    return net, optimizer


def finetune_steps(train_size: int, config: TrainConfig) -> int:
    """Optimiser steps of one fine-tune fit on train_size subjects."""
    return config.epochs * -(-train_size // config.batch_size)


def time_finetune_step(cohort: Cohort, config: TrainConfig) -> float:
    """Seconds of one fine-tune step at config.batch_size on this machine, as the training loop takes it:
    augmented patches rendered on the device, one SGD step (median of 2 after a warm-up)."""
    import time

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


def _fit_finetune(cohort, indices, labels, config) -> FittedModel:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    weight = _class_weights(labels, config.class_weighting)
    weight = None if weight is None else weight.to(config.device)
    net, optimizer = build_finetune_net(config)
    size = config.input_size(net.backbone)
    net.eval()
    with autocast(config.precision, config.device):
        net.set_feature_scale(cohort.render(indices, size, device=config.device).flatten(0, 1))
    covariates = clinical_covariates(cohort, indices).to(config.device) if config.clinical else None
    if covariates is not None:
        mean, std = _covariate_scale(covariates)
        net.covariate_mean.copy_(mean)
        net.covariate_std.copy_(std)
    labels = labels.to(config.device)
    net.train()
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    for _ in range(config.epochs):
        loss_sum = correct = 0.0
        for batch in _batches(len(indices), config.batch_size, generator):
            patches = cohort.render(indices[batch.numpy()], size, generator, config.device)
            loss, right = finetune_step(net, optimizer, patches, labels[batch], weight, config.precision,
                                        None if covariates is None else covariates[batch.to(config.device)])
            loss_sum, correct = loss_sum + loss * len(batch), correct + right
        history["loss"].append(round(loss_sum / len(indices), 6))
        history["accuracy"].append(round(correct / len(indices), 6))
    return FittedModel(config, net.head, net.eval(), history=history)


def head_features(model: FittedModel, cohort: Cohort, indices: Sequence[int]) -> torch.Tensor:
    """[m, 8, D] what the model's head sees for the given subjects' plain views: frozen mode, their standardised
    texture features; fine-tune, `OctupletNet.patch_features` of patches rendered on the device (8 subjects per
    backbone call). Prediction and the novelty check both start from it."""
    indices = np.asarray(indices)
    config = model.config
    with torch.inference_mode():
        if model.net is None:
            features = cohort.frozen_features(config, backbone=model.backbone)[torch.from_numpy(indices), 0]
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
    with torch.inference_mode():
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
