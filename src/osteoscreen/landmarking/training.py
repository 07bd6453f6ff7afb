"""Training a landmark model's heatmap network on whole-radiograph views.

The network sees augmented views (geometry.py) of the training radiographs, drawn from a seeded NumPy generator
in a fixed order, so a seed gives the same model on every machine at the configured thread count:

- geometry: scaling (0.85-1.15), rotation (+-6 degrees), shifts of the jaw in the frame (up to 8 % of the view
  each way), and horizontal flips with right and left landmarks swapped;
- intensity, as devices differ: gamma (e^U(-0.4, 0.4)), contrast (0.7-1.3) and brightness (+-0.1), a Gaussian blur
  (sigma up to 1.2 view px, half the views) and white noise (sigma up to 0.04, half the views).

It learns all 8 heatmaps of a view at once: AdamW (decoder lr 1e-3, encoder 2e-4, weight decay 1e-4), a cosine
schedule, the encoder's stem and first three blocks frozen (`FROZEN_BLOCKS`). Fixed in advance, not tuned on any
evaluation fold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.core.utils import seeded
from osteoscreen.landmarking.geometry import SWAP, WorkingImage, about, sample, to_view, whole_view
from osteoscreen.landmarking.network import HeatmapNet, heatmap_loss

#: Encoder blocks (0-based, after the stem) up to which the weights stay ImageNet's: the high-resolution early
#: layers, the costliest to train and the most generic.
FROZEN_BLOCKS = 2
#: The encoder's stages tapped by the decoder: the ends of its 24-, 40- and 80-channel stages (strides 4, 8, 16).
TAPS = (2, 4, 7)
LEARNING_RATES = {"decoder": 1e-3, "encoder": 2e-4}
WEIGHT_DECAY = 1e-4


def build_net(config, weights: str = "imagenet") -> HeatmapNet:
    """The untrained network of a LandmarkConfig (ImageNet encoder, random decoder)."""
    net = HeatmapNet(len(LANDMARKS), TAPS, config.stride, coordinates=True, weights=weights)
    backbone = net.backbone.net
    for module in (backbone.stem, backbone.net._bn0, *backbone.net._blocks[: FROZEN_BLOCKS + 1]):
        module.requires_grad_(False)
    return net


def intensity_augmentation(views: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """[B, 1, h, w] in [0, 1] -> the same with device-like intensity changes (module docstring), per view."""
    out = []
    for view in views:
        gamma = math.exp(rng.uniform(-0.4, 0.4))
        contrast, brightness = rng.uniform(0.7, 1.3), rng.uniform(-0.1, 0.1)
        view = (view.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5 + brightness
        if rng.random() < 0.5:
            sigma = rng.uniform(0.3, 1.2)
            radius = int(math.ceil(3 * sigma))
            taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
            taps = taps / taps.sum()
            view = F.conv2d(F.pad(view[None], (radius,) * 4, mode="replicate"), taps.view(1, 1, 1, -1))
            view = F.conv2d(view, taps.view(1, 1, -1, 1))[0]
        if rng.random() < 0.5:
            noise = torch.from_numpy(rng.standard_normal(view.shape, dtype=np.float32))
            view = view + rng.uniform(0.0, 0.04) * noise
        out.append(view.clamp(0, 1))
    return torch.stack(out)


def view_batch(images: Sequence[WorkingImage], points: Sequence[np.ndarray], config, rng: np.random.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented whole views [B, 1, h, w] and their targets [B, 8, 2] (view corner coordinates; NaN where a
    landmark is unannotated)."""
    h, w = config.view
    views, targets = [], []
    for image, marks in zip(images, points, strict=True):
        flip = bool(rng.random() < 0.5)
        shift = (rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h)
        jitter = about((w / 2 + shift[0], h / 2 + shift[1]), rng.uniform(0.85, 1.15), rng.uniform(-6, 6), flip)
        matrix = whole_view(image.shape, (h, w)) @ jitter
        target = to_view(matrix, marks)
        views.append(sample(image.level, image.shape, matrix[None], (h, w)))
        targets.append(target[list(SWAP)] if flip else target)
    return intensity_augmentation(torch.cat(views), rng), torch.from_numpy(np.stack(targets)).float()


def _optimiser(net: HeatmapNet, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    encoder = [p for p in net.backbone.parameters() if p.requires_grad]
    decoder = [p for name, p in net.named_parameters() if not name.startswith("backbone.")]
    optimiser = torch.optim.AdamW([{"params": decoder, "lr": LEARNING_RATES["decoder"]},
                                   {"params": encoder, "lr": LEARNING_RATES["encoder"]}], weight_decay=WEIGHT_DECAY)
    return optimiser, torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))


def train_net(images: Sequence[WorkingImage], points: Sequence[np.ndarray], config,
              progress: Callable[[Iterable], Iterable] = iter, weights: str = "imagenet") -> HeatmapNet:
    """Train the heatmap network on annotated radiographs; returns it in eval mode. points: [8, 2] per image
    (NaN rows: landmarks not annotated, left out of the loss)."""
    rng = np.random.default_rng([config.seed, 7])
    with seeded(config.seed):
        net = build_net(config, weights)
    n = len(images)
    steps = config.epochs * max(1, math.ceil(n / config.batch))
    optimiser, schedule = _optimiser(net, steps)
    net.train()
    order: list = []
    for _ in progress(range(steps)):
        if not order:
            order = list(rng.permutation(n))
        chosen, order = order[: config.batch], order[config.batch:]
        views, targets = view_batch([images[i] for i in chosen], [points[i] for i in chosen], config, rng)
        logits = net(views).flatten(0, 1)
        targets = targets.flatten(0, 1)
        loss = heatmap_loss(logits, targets.nan_to_num(), _inside(targets, logits.shape[-2:], net.stride),
                            net.stride, config.sigma_cells)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    return net.eval()


def _inside(targets: torch.Tensor, cells: tuple[int, int], stride: int) -> torch.Tensor:
    """[M] bool: targets [M, 2] (view corner coordinates) that are annotated and inside the view."""
    h, w = cells
    x, y = targets[:, 0], targets[:, 1]
    return torch.isfinite(targets).all(dim=1) & (x >= 0) & (y >= 0) & (x < w * stride) & (y < h * stride)
