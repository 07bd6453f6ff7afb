"""Frozen backbone features, computed once per cohort and shared by every fold and method, memoised in the cohort.

`frozen_features`: texture statistics [N, V, 8, T] of V views per subject (view 0 plain, the rest augmented),
extracted by a fused copy of the backbone (`Backbone.for_inference`) in small batches under the settings'
precision, and cached on disk (cohort.cache_dir) keyed by the data's hash, the backbone's parameters (a digest of
its tensors: two weights files with the same name never share features), taps, views, seed, precision and
resolution. The settings are any object with `FeatureSettings`' members (a training.TrainConfig is one): this layer
sits below training and does not import it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch

from osteoscreen.core.errors import InputWarning
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.core.precision import autocast
from osteoscreen.core.utils import intra_op_threads, side_by_side, thread_map
from osteoscreen.data.cohort import Cohort
from osteoscreen.io.outputs import atomic_path
from osteoscreen.models.backbones import Backbone

FEATURE_BATCH = 8  # patches per backbone call extracting frozen features: small calls keep activations in cache
# (EfficientNet-Lite0, bf16, 2240 patches on the 2-core VM: 8.0 s at 8, 11.0 s at 32, 15.6 s at 64)


class FeatureSettings(Protocol):
    """What frozen features depend on (members of training.TrainConfig): backbone name, weights, taps; views per
    subject; intra-op threads; device; precision; seed (of the augmented views); input_size(backbone) in px."""

    backbone: str
    weights: str
    taps: tuple[int, ...] | None
    views: int
    threads: int
    device: str
    precision: str
    seed: int

    def input_size(self, backbone: Backbone) -> int: ...


@functools.lru_cache(maxsize=4)
def frozen_backbone(name: str, weights: str, taps: tuple[int, ...] | None) -> Backbone:
    """The frozen-mode backbone of a config, built once per process (building one reads and hashes its weights
    file, about 80 ms; every fold's fit and prediction asks for it). Frozen backbones are never trained. Its
    modules' random initialisation (replaced by the weights) leaves torch's global generator as it was."""
    with torch.random.fork_rng(devices=[]):
        return Backbone(name, weights, taps).eval()



def frozen_features(cohort: Cohort, config: FeatureSettings, progress: Callable = iter, backbone: Backbone | None = None
                    ) -> torch.Tensor:
    """[N, V, 8, T] fp32 texture features of every subject's V views (view 0 plain) of the cohort's root; computed
    once per cohort (memo) and, with a cache_dir, once per data (disk).

    backbone: a loaded one (a saved model's); by default the one config names, with its weights.
    """
    cohort = cohort.root
    backbone = backbone or frozen_backbone(config.backbone, config.weights, config.taps)
    digest = _feature_digest(cohort, config, backbone)
    key = f"frozen:{digest}"
    if key in cohort.memo:
        return cohort.memo[key]
    cache_file = None if cohort.cache_dir is None or cohort.data_hash is None else (
        Path(cohort.cache_dir) / f"features-{digest[:24]}.safetensors")
    features = None if cache_file is None else _cached(cache_file, (len(cohort), config.views, len(LANDMARKS),
                                                                   backbone.texture_dim))
    if features is None:
        features = _extract(cohort, backbone, config, progress)
        if cache_file is not None:
            from safetensors.torch import save_file

            with atomic_path(cache_file) as partial:
                save_file({"features": features.contiguous()}, str(partial))
    cohort.memo[key] = features
    return features


def _cached(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The features kept in a cache file, or None when absent or damaged (unreadable, another shape or dtype, or
    non-finite values; then with a warning naming the file, and they are extracted again and the file replaced)."""
    if not path.exists():
        return None
    from safetensors.torch import load_file

    try:
        features = load_file(path)["features"]
        problem = (None if tuple(features.shape) == shape and features.dtype == torch.float32
                   and bool(torch.isfinite(features).all()) else
                   f"{tuple(features.shape)} {features.dtype} features, expected {shape} torch.float32, all finite")
    except Exception as error:  # safetensors raises its own error types for truncated or garbage files
        problem = f"not readable ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    if problem:
        warnings.warn(f"{path}: damaged feature cache ({problem}); extracted again and replaced", InputWarning,
                      stacklevel=3)
        return None
    return features


def forget_frozen_features(cohort: Cohort) -> None:
    """Drop the memoised frozen features (the next call extracts them again; the disk cache stays)."""
    for key in [k for k in cohort.root.memo if k.startswith("frozen:")]:
        del cohort.root.memo[key]


def _extract(cohort: Cohort, backbone: Backbone, config: FeatureSettings, progress: Callable) -> torch.Tensor:
    """Subjects side by side on the machine's cores, each on config.threads intra-op threads: every subject's
    features are the same bits whatever the number of cores."""
    backbone = backbone.for_inference().to(config.device)  # fused afresh: the backbone may have changed
    size = config.input_size(backbone)
    out = torch.empty(len(cohort), config.views, len(LANDMARKS), backbone.texture_dim)

    def subject(index: int) -> None:
        with intra_op_threads(config.threads), torch.inference_mode(), autocast(config.precision, config.device):
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + index)
            views = [cohort.render([index], size, device=config.device)[0]]
            views += [cohort.render([index], size, generator, config.device)[0] for _ in range(config.views - 1)]
            patches = torch.cat(views)  # [V*8, 1, H, W]
            chunks = [backbone.texture_features(chunk).float().cpu() for chunk in patches.split(FEATURE_BATCH)]
            out[index] = torch.cat(chunks).view(config.views, len(LANDMARKS), -1)

    on_cuda = config.device.startswith("cuda")
    with intra_op_threads(config.threads):  # this thread's count stays what every subject sets
        thread_map(subject, range(len(cohort)), progress, threads=1 if on_cuda else side_by_side(config.threads))
    return out


def parameter_digest(backbone: Backbone) -> str:
    """SHA-256 of the backbone's parameters and buffers (names, shapes, dtypes, values); computed once per backbone
    object (about 20 ms for EfficientNet-Lite0)."""
    if getattr(backbone, "_parameter_digest", None) is None:
        digest = hashlib.sha256()
        for name, tensor in backbone.net.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
        backbone._parameter_digest = digest.hexdigest()
    return backbone._parameter_digest


def _feature_digest(cohort: Cohort, config: FeatureSettings, backbone: Backbone) -> str:
    identity = {"data": cohort.data_hash, "backbone": config.backbone, "parameters": parameter_digest(backbone),
                "taps": backbone.taps, "views": config.views, "seed": config.seed,
                "patch": asdict(cohort.patch_config), "precision": config.precision,
                "size": config.input_size(backbone), "format": 6}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
