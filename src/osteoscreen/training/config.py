"""What defines a fit: `TrainConfig`, each field declared once and validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from osteoscreen.core.arguments import Rule, between, check_fields, check_range, option
from osteoscreen.core.errors import InputError
from osteoscreen.core.precision import DEFAULT_PRECISION, PRECISIONS, warn_if_emulated
from osteoscreen.data.patches import PatchConfig
from osteoscreen.models.backbones import BACKBONES, Backbone
from osteoscreen.models.heads import ATTENTION_ACTIVATIONS, HEADS
from osteoscreen.models.octuplet import PATCH_FEATURES

MODES = ("frozen", "finetune")
DEVICES = ("auto", "cpu", "cuda")
MAX_THREADS = 256


def resolved_device(device: str) -> str:
    """The device a configuration's `device` means on this machine: "auto" is cuda where available, else cpu."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


POSITIVE: Rule = (lambda value: value > 0), "a number > 0"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a fit, each field declared once (arguments.option: its documentation, its allowed
    values, whether the command line has a flag for it). Defaults: the `osteoscreen` recipe (training.recipes;
    `paper` is the published one): the paper's optimiser and schedule, frozen EfficientNet-Lite0 features."""

    head: str = option("group-attention", "the CNN head (models.heads.HEADS; the method name on the command line)",
                       choices=HEADS, flag=False)
    mode: str = option("frozen", "frozen: the backbone's features computed once, the head trained on them; "
                       "finetune: the backbone trained too, as in the paper", choices=MODES)
    backbone: str = option("efficientnet_lite0", "the shared ImageNet backbone", choices=BACKBONES)
    weights: str = option("imagenet", "backbone weights: imagenet, none, a path or a URL")
    attention: str = option("softmax", "group-attention weights: softmax or sigmoid", choices=ATTENTION_ACTIVATIONS)
    hidden: int = option(128, "width of the head's hidden layers", rule=between(1, 65_536))
    epochs: int = option(100, "passes over the training subjects", rule=between(1, 100_000))
    batch_size: int = option(32, "subjects per optimiser step", rule=between(1, 4096))
    lr_backbone: float = option(1e-4, "SGD learning rate of the backbone, fine-tune mode",
                                rule=POSITIVE)
    lr_head: float = option(1e-2, "SGD learning rate of the head", rule=POSITIVE)
    momentum: float = option(0.9, "SGD momentum",
                             rule=((lambda value: 0 <= value < 1), "a number in [0, 1)"))
    weight_decay: float = option(1e-4, "SGD weight decay",
                                 rule=((lambda value: value >= 0), "a number >= 0"))
    class_weighting: bool = option(False, "weight the loss by inverse class frequency")
    views: int = option(4, "frozen mode: views per subject (1 plain + augmented)", rule=between(1, 64))
    taps: tuple[int, ...] | None = option(None, "backbone blocks whose activations make the texture feature "
                                          "(None: the backbone's own)", flag=False)
    seed: int = option(0, "seed of initialisation, augmentation and splits", rule=between(0, 2**32 - 1))
    precision: str = option(DEFAULT_PRECISION, "arithmetic: fp32 (the same results on every CPU) or bf16 autocast "
                            "(a speed option, about 2x where the CPU or GPU has native bf16; changes the results)",
                            choices=PRECISIONS)
    threads: int = option(1, "intra-op threads of each computation, whichever process runs it (osteoscreen.core.utils; "
                          "1: results do not depend on the number of cores, independent computations run side by "
                          "side instead; more speeds up a single long fit and changes the last digits of its "
                          "results)", rule=between(1, MAX_THREADS))
    device: str = option("auto", "auto: CUDA when available, else CPU", choices=DEVICES)
    native_res: bool = option(False, "feed patches at their own resolution (patch_px, 100) instead of upsampling "
                              "to 224 (a deviation from the paper; about 5x less fine-tune work)")
    patch_feature: str = option("texture", "fine-tune mode: what each patch gives the head: texture "
                                "(standardised statistics of intermediate layers, as in frozen mode) or pooled (the "
                                "backbone's last layer, the paper's AlexNet fc7); see docs/method.md",
                                choices=PATCH_FEATURES)
    clinical: bool = option(False, "the head's final layer also sees age and sex (the `+clinical` methods)",
                            flag=False)
    patch: PatchConfig = option(None, "how patches are cut (their own options)", factory=PatchConfig, flag=False)

    def __post_init__(self):
        """Validates every field (its type, then its allowed values; errors name the field); resolves device
        `auto` to what this machine runs."""
        check_fields(self)
        check_range(self.taps is None or (len(self.taps) > 0 and min(self.taps) >= 0), "taps",
                    "None or block indices >= 0", self.taps)
        object.__setattr__(self, "device", resolved_device(self.device))
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InputError("device: 'cuda' asked for, but no CUDA device is available to this torch build")
        warn_if_emulated(self.precision, self.device)

    def input_size(self, backbone: Backbone) -> int:
        """Side in px of the patches fed to the backbone: the backbone's 224, or patch_px with native_res."""
        return self.patch.patch_px if self.native_res else backbone.input_size

    def to_dict(self) -> dict:
        return asdict(self)
