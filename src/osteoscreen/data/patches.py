"""Landmark patches (README "The method"): crop around each of the 8 landmarks, augment, resize.

A subject's patches are kept as *context crops*: squares somewhat larger than the patch, so that a stretched
view (augmentation) still has real pixels to sample. A view is rendered from the context crops with one
affine resampling (torch grid_sample): stretch, horizontal flip, resize to the backbone's input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from osteoscreen.core.arguments import check_fields, check_range
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import LANDMARKS

#: Patch sides accepted, in pixels (the paper's is 100; the limit keeps a patch's crops within memory).
MIN_PATCH_PX, MAX_PATCH_PX = 8, 1024


@dataclass(frozen=True)
class PatchConfig:
    """patch_px: patch side in pixels (the paper: 100); patch_mm: physical side in mm, overrides patch_px
    using the pixel spacing; context: context crop side / patch side (room for stretch up to that factor);
    stretch: augmentation draws a scale per axis from [1 - stretch, 1 + stretch]; flip_probability: chance
    that a patch is mirrored left-right (patches only: left and right landmarks are never swapped)."""

    patch_px: int = 100
    patch_mm: float | None = None
    context: float = 1.25
    stretch: float = 0.1
    flip_probability: float = 0.5

    def __post_init__(self):
        check_fields(self)
        if not 0 <= self.flip_probability <= 1:
            raise InputError(f"flip_probability must lie in [0, 1], got {self.flip_probability}")
        if not MIN_PATCH_PX <= self.patch_px <= MAX_PATCH_PX:
            raise InputError(f"patch size must lie in [{MIN_PATCH_PX}, {MAX_PATCH_PX}] px, got {self.patch_px}")
        check_range(self.patch_mm is None or self.patch_mm > 0, "patch_mm", "None or a positive number",
                    self.patch_mm)
        if not 0 <= self.stretch < 0.5 or (1 + self.stretch) > self.context:
            raise InputError(f"stretch {self.stretch} must lie in [0, 0.5) and fit the context {self.context}")

    def side_px(self, spacing_mm: float | None, where: str = "image") -> int:
        """Patch side in pixels for an image with this pixel spacing."""
        if self.patch_mm is None:
            return self.patch_px
        if spacing_mm is None:
            raise InputError(f"{where}: patch_mm={self.patch_mm:g} needs the pixel spacing, which this image does not "
                             "give (add pixel_spacing_mm to subjects.csv)")
        side = max(MIN_PATCH_PX, round(self.patch_mm / spacing_mm))
        if side > MAX_PATCH_PX:
            raise InputError(f"{where}: patch_mm={self.patch_mm:g} at {spacing_mm:g} mm per pixel is {side} px, over "
                             f"the limit of {MAX_PATCH_PX} px")
        return side


#: The least difference (grey values in [0, 1]) between an image's two normalising percentiles that still holds a
#: picture: below a sixteenth of one 16-bit step, the image is one value almost everywhere.
MIN_CONTRAST = 1e-6


def intensity_window(pixels: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5
                     ) -> tuple[float, float]:
    """The grey values ([H, W] in [0, 1]) that normalise_intensity maps to 0 and 1: the image's own percentiles.
    An image without contrast between them (blank, saturated, or a header that maps every value to one) is an
    InputError: there is nothing to screen."""
    low, high = np.percentile(pixels, [low_percentile, high_percentile])
    if high - low < MIN_CONTRAST:
        raise InputError(f"the image has no contrast ({high_percentile - low_percentile:g} % of its pixels are "
                         f"{low:.4g}): blank or saturated, not a radiograph to screen")
    return low, high  # NumPy float64 scalars: the normalisation computes in float64, as it always has


def normalise_intensity(pixels: np.ndarray) -> np.ndarray:
    """[H, W] grey values in [0, 1] -> [H, W] float32 in [0, 1]: intensity_window mapped to 0 and 1 (removes
    exposure and contrast differences between devices)."""
    low, high = intensity_window(pixels)
    return np.clip((pixels - low) / (high - low), 0.0, 1.0).astype(np.float32)


def check_apart(landmarks: np.ndarray, side: int) -> None:
    """InputError when two of the 8 landmarks ([8, 2] (x, y) px; NaN: not placed yet, skipped) lie closer than
    half a patch side (`side` px): their patches would show mostly the same bone. No two of the 8 sites are that
    close in a jaw (half the paper's 100-px patch is about 5 mm; the sites lie centimetres apart), so such points
    come from an annotation tool's unplaced defaults, a copied row or swapped columns."""
    points = np.asarray(landmarks, dtype=np.float64)
    first, second = np.triu_indices(len(points), 1)
    distance = np.hypot(*(points[first] - points[second]).T)
    close = np.flatnonzero(distance < side / 2)  # NaN compares False
    if len(close):
        a, b = first[close[0]], second[close[0]]
        raise InputError(f"landmarks {LANDMARKS[a]} and {LANDMARKS[b]} lie {distance[close[0]]:.1f} px apart, under "
                         f"half a patch side ({side / 2:g} px): their patches would be the same bone; check the "
                         f"landmarks ({len(close)} such pair(s))")


def crop_contexts(pixels: np.ndarray, landmarks: np.ndarray, side: int, context: float
                  ) -> tuple[np.ndarray, int]:
    """Cut the 8 context crops.

    pixels: [H, W]; landmarks: [8, 2] (x, y) in pixels; side: patch side in px.
    Returns ([8, S, S] float32 with S = ceil(side * context), number of patches whose side×side window
    reaches past the image border and was reflect-padded). A landmark outside the image is an InputError.
    """
    height, width = pixels.shape
    size = math.ceil(side * context)
    crops, padded = np.empty((len(landmarks), size, size), np.float32), 0
    for index, (x, y) in enumerate(landmarks):
        if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
            raise InputError(f"landmark {LANDMARKS[index]} at ({x:g}, {y:g}) lies outside the "
                             f"{width}x{height} image")
        col, row = int(round(x)), int(round(y))
        inner_top, inner_left = row - side // 2, col - side // 2
        padded += inner_top < 0 or inner_left < 0 or inner_top + side > height or inner_left + side > width
        top, left = row - size // 2, col - size // 2
        rows = _reflect_indices(np.arange(top, top + size), height)
        cols = _reflect_indices(np.arange(left, left + size), width)
        crops[index] = pixels[np.ix_(rows, cols)]
    return crops, int(padded)


def _reflect_indices(indices: np.ndarray, length: int) -> np.ndarray:
    """Reflect out-of-range indices back into [0, length) (numpy 'reflect' padding, edge not repeated)."""
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    folded = np.mod(indices, period)
    return np.where(folded < length, folded, period - folded)


def render_views(crops: torch.Tensor, context: float, out_size: int, stretch: torch.Tensor | None = None,
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Resample patches from context crops.

    crops: [N, S, S] on any device; stretch: [N, 2] scale of the sampled window along (x, y), 1 = the plain
    patch; flip: [N] bool, mirror left-right (both moved to the crops' device). Returns [N, out_size, out_size]
    float32 on the crops' device (bilinear). Each patch is resampled on its own, so rendering many subjects in
    one call gives what rendering each alone gives.
    """
    count, device = crops.shape[0], crops.device
    scale = torch.ones(count, 2, device=device) if stretch is None else stretch.to(device, torch.float32)
    sign = torch.ones(count, device=device) if flip is None else 1.0 - 2.0 * flip.to(device, torch.float32)
    theta = torch.zeros(count, 2, 3, device=device)
    theta[:, 0, 0] = scale[:, 0] * sign / context
    theta[:, 1, 1] = scale[:, 1] / context
    grid = F.affine_grid(theta, [count, 1, out_size, out_size], align_corners=False)
    views = F.grid_sample(crops[:, None].to(torch.float32), grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)
    return views[:, 0]


def random_augmentation(count: int, config: PatchConfig, generator: torch.Generator
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ([count, 2] stretch factors, [count] flip flags) for `count` patches."""
    stretch = 1.0 + config.stretch * (2.0 * torch.rand(count, 2, generator=generator) - 1.0)
    flip = torch.rand(count, generator=generator) < config.flip_probability
    return stretch, flip


def to_uint8(patches: np.ndarray) -> np.ndarray:
    """[..., H, W] float in [0, 1] -> uint8 (the integer input LBP and PNG files want)."""
    return np.clip(np.round(np.asarray(patches) * 255.0), 0, 255).astype(np.uint8)
