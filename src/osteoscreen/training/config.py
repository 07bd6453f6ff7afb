"""What defines a fit: `TrainConfig`, validated on construction (the paper's optimiser and schedule by default)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from osteoscreen.arguments import check_fields
from osteoscreen.data.patches import PatchConfig
from osteoscreen.errors import InputError
from osteoscreen.models.backbones import BACKBONES, Backbone
from osteoscreen.models.heads import ATTENTION_ACTIVATIONS, HEADS
from osteoscreen.models.octuplet import PATCH_FEATURES
from osteoscreen.precision import DEFAULT_PRECISION, PRECISIONS, warn_if_emulated

MODES = ("frozen", "finetune")
DEVICES = ("auto", "cpu", "cuda")
MAX_THREADS = 256


def resolved_device(device: str) -> str:
    """The device a configuration's `device` means on this machine: "auto" is cuda where available, else cpu."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


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
    precision: str = DEFAULT_PRECISION
    threads: int = 1  # intra-op threads of each computation, whichever process runs it (osteoscreen.utils)
    device: str = "auto"
    native_res: bool = False
    patch_feature: str = "texture"
    clinical: bool = False  # the head's final layer also sees age and sex (the `+clinical` methods)
    patch: PatchConfig = field(default_factory=PatchConfig)

    def __post_init__(self):
        """Validates every field (its type, then its range; errors name the field); resolves device `auto` to what
        this machine runs."""
        check_fields(self)
        checks = [(self.head in HEADS, f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}"),
                  (self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}"),
                  (self.backbone in BACKBONES, f"unknown backbone {self.backbone!r}; choose one of "
                                               f"{', '.join(BACKBONES)}"),
                  (self.attention in ATTENTION_ACTIVATIONS,
                   f"attention must be one of {', '.join(ATTENTION_ACTIVATIONS)}, got {self.attention!r}"),
                  (self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}"),
                  (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
                  (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
                  (self.views >= 1, f"views must be >= 1, got {self.views}"),
                  (self.lr_backbone > 0, f"lr_backbone must be positive, got {self.lr_backbone}"),
                  (self.lr_head > 0, f"lr_head must be positive, got {self.lr_head}"),
                  (0 <= self.momentum < 1, f"momentum must lie in [0, 1), got {self.momentum}"),
                  (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
                  (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
                  (self.taps is None or (len(self.taps) > 0 and min(self.taps) >= 0),
                   f"taps must be block indices >= 0, got {self.taps}"),
                  (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got "
                                                 f"{self.precision!r}"),
                  (1 <= self.threads <= MAX_THREADS, f"threads must be 1 to {MAX_THREADS}, got {self.threads}"),
                  (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
                  (self.patch_feature in PATCH_FEATURES, f"patch feature must be one of {', '.join(PATCH_FEATURES)}"
                                                         f", got {self.patch_feature!r}")]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        object.__setattr__(self, "device", resolved_device(self.device))
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InputError("device: 'cuda' asked for, but no CUDA device is available to this torch build")
        warn_if_emulated(self.precision, self.device)

    def input_size(self, backbone: Backbone) -> int:
        """Side in px of the patches fed to the backbone: the backbone's 224, or patch_px with native_res."""
        return self.patch.patch_px if self.native_res else backbone.input_size

    def to_dict(self) -> dict:
        return asdict(self)
