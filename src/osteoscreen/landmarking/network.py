"""The heatmap network of a landmark model, and how a heatmap becomes a point and a confidence.

`HeatmapNet`: the ImageNet EfficientNet-Lite0 the screening models use, up to a stage (`taps`, the last one
deepest), with a light feature-pyramid decoder: a 1x1 projection of each tapped stage to `width` channels, the
deepest (with two coordinate channels, so the network knows where in the view it looks: left from right) upsampled
and added to the shallower ones, then a 3x3 convolution and a 1x1 to K heatmaps at the shallowest tap's stride.
grey [N, 1, h, w] in [0, 1] -> logits [N, K, h / stride, w / stride].

A heatmap is a distribution over its cells (softmax). Its point: the probability-weighted mean position of the
cells within `radius` cells of the most probable one (a local soft-argmax: sub-cell precision, and a second
mode far away does not drag the point between the two). Its confidence: the probability mass in that window,
in [0, 1]; a network trained on Gaussian targets of sigma = radius / 2 puts about 0.86 there when it is sure,
and a flat or two-peaked heatmap puts much less.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from osteoscreen.models.backbones import Backbone


class HeatmapNet(nn.Module):
    """K heatmaps from a grey view (module docstring). stride: view pixels per heatmap cell."""

    def __init__(self, outputs: int, taps: tuple[int, ...], stride: int, width: int = 64, coordinates: bool = True,
                 weights: str = "imagenet"):
        super().__init__()
        self.backbone = Backbone("efficientnet_lite0", weights, taps)
        self.stride, self.coordinates = stride, coordinates
        channels = [self.backbone.net.tap_channels[t] for t in taps]
        extra = [2 * coordinates if i == len(channels) - 1 else 0 for i in range(len(channels))]
        self.lateral = nn.ModuleList(nn.Conv2d(c + e, width, 1) for c, e in zip(channels, extra, strict=True))
        self.out = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(width, outputs, 1))

    def train(self, mode: bool = True) -> HeatmapNet:
        """Training mode for the decoder; the encoder's batch normalisation keeps its ImageNet statistics (batches
        of a few radiographs would estimate them badly)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        features = self.backbone.net.tapped_after_stem(self.backbone.stem(grey), self.backbone.taps)
        deepest = features[-1]
        if self.coordinates:
            n, _, h, w = deepest.shape
            ys = torch.linspace(-1, 1, h, dtype=deepest.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
            xs = torch.linspace(-1, 1, w, dtype=deepest.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
            deepest = torch.cat([deepest, xs, ys], dim=1)
        x = self.lateral[-1](deepest)
        for feature, lateral in zip(reversed(features[:-1]), reversed(self.lateral[:-1]), strict=True):
            x = F.interpolate(x, size=feature.shape[-2:], mode="bilinear", align_corners=False) + lateral(feature)
        return self.out(x)


def cell_centres(height: int, width: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[h*w] x and y of each heatmap cell's centre in view corner coordinates."""
    ys, xs = torch.meshgrid((torch.arange(height) + 0.5) * stride, (torch.arange(width) + 0.5) * stride,
                            indexing="ij")
    return xs.flatten(), ys.flatten()


def heatmap_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, stride: int,
                 sigma_cells: float) -> torch.Tensor:
    """Mean over valid heatmaps of the cross-entropy to a Gaussian target (sigma in cells) plus the L1 distance
    (in cells) of the soft-argmax to the target. logits [M, h, w]; targets [M, 2] view corner coordinates; valid
    [M] bool (targets inside the view)."""
    if not valid.any():
        return logits.sum() * 0.0
    logits, targets = logits[valid], targets[valid]
    m, h, w = logits.shape
    xs, ys = cell_centres(h, w, stride)
    log_p = F.log_softmax(logits.view(m, -1), dim=1)
    distance2 = ((xs - targets[:, :1]) ** 2 + (ys - targets[:, 1:]) ** 2) / (stride * sigma_cells) ** 2
    target = torch.softmax(-0.5 * distance2, dim=1)
    cross_entropy = -(target * log_p).sum(dim=1)
    p = log_p.exp()
    expected = torch.stack([(p * xs).sum(dim=1), (p * ys).sum(dim=1)], dim=1)
    return (cross_entropy + (expected - targets).abs().sum(dim=1) / stride).mean()


def read_heatmaps(logits: torch.Tensor, stride: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [M, h, w] -> (points [M, 2] view corner coordinates, confidence [M]) by the local soft-argmax within
    `radius` cells of each heatmap's most probable cell (module docstring)."""
    m, h, w = logits.shape
    p = torch.softmax(logits.reshape(m, -1).double(), dim=1)
    xs, ys = cell_centres(h, w, stride)
    peak = p.argmax(dim=1)
    near = ((xs[None] - xs[peak][:, None]) ** 2 + (ys[None] - ys[peak][:, None]) ** 2) <= (radius * stride) ** 2
    local = p * near
    mass = local.sum(dim=1)
    points = torch.stack([(local * xs).sum(dim=1), (local * ys).sum(dim=1)], dim=1) / mass[:, None]
    return points, mass
