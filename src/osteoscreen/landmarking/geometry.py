"""Where a landmark model looks: the radiograph at a working resolution, and the affine views cut from it.

Coordinates. Points are (x, y) in the stored image's pixels with (0, 0) at the centre of the top-left pixel (the
dataset convention). Internally every map works in *corner* coordinates, (0, 0) at the top-left corner of the
top-left pixel (corner = centre + 0.5), where scaling is a plain multiplication.

A view is an [h, w] image sampled from the radiograph through a 3x3 matrix M that maps the view's corner
coordinates to the radiograph's corner coordinates. The whole-image view fits the radiograph into the view (aspect
kept, zero padding). Augmentation composes with M: scaling, rotation and shifts about the view's centre, and a
horizontal flip that also swaps each `_right` landmark with its `_left` twin (the patient's right is on the
image's left, so a mirrored radiograph is a radiograph of a mirrored patient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from osteoscreen.core.landmarks import LANDMARKS

#: For landmark index i, the index of its twin on the other side (condyle_right <-> condyle_left, ...).
SWAP: tuple[int, ...] = tuple(i ^ 1 for i in range(len(LANDMARKS)))
#: Width (px) of the working level views are sampled from: twice the default view's, so that bilinear sampling
#: does not alias.
LEVEL_WIDTH = 768
#: The intensity window every radiograph is brought to [0, 1] with (as the screening patches are).
PERCENTILES = (0.5, 99.5)


@dataclass
class WorkingImage:
    """One radiograph ready for views: `level` [hl, wl] float32 in [0, 1] (an antialiased downscale, to
    LEVEL_WIDTH, of the percentile-windowed image), the stored image's (height, width) in px, and its spacing."""

    level: torch.Tensor
    shape: tuple[int, int]
    spacing_mm: float | None

    @classmethod
    def from_pixels(cls, pixels: np.ndarray, spacing_mm: float | None) -> WorkingImage:
        """pixels [H, W] float in [0, 1] (a decoded Radiograph's) -> the working level."""
        pixels = np.asarray(pixels, dtype=np.float32)
        low, high = np.percentile(pixels, PERCENTILES)  # all pixels: a mirrored image gets the same window
        windowed = np.clip((pixels - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)
        image = torch.from_numpy(windowed)[None, None]
        height, width = pixels.shape
        scale = min(1.0, LEVEL_WIDTH / width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        level = (F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
                 if scale < 1.0 else image[0, 0].clone())
        return cls(level, (height, width), spacing_mm)


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def about(centre: tuple[float, float], scale: float = 1.0, degrees: float = 0.0, flip: bool = False) -> np.ndarray:
    """[3, 3] map of corner coordinates: a horizontal flip, scaling and rotation about `centre`."""
    angle = math.radians(degrees)
    linear = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if flip:
        linear = linear @ np.diag([-1.0, 1.0])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    return translation(*centre) @ matrix @ translation(-centre[0], -centre[1])


def whole_view(shape: tuple[int, int], view: tuple[int, int]) -> np.ndarray:
    """M of the whole radiograph of `shape` (H, W) fitted, aspect kept and centred, into a view of (h, w)."""
    (height, width), (out_h, out_w) = shape, view
    scale = max(width / out_w, height / out_h)  # image px per view px
    return translation(width / 2, height / 2) @ np.diag([scale, scale, 1.0]) @ translation(-out_w / 2, -out_h / 2)


def to_view(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[K, 2] image points (centre coordinates) -> view corner coordinates under M."""
    corners = np.concatenate([points + 0.5, np.ones((len(points), 1))], axis=1)
    return (np.linalg.solve(matrix, corners.T).T)[:, :2]


def to_image(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[K, 2] view corner coordinates -> image points (centre coordinates) under M."""
    corners = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    return (matrix @ corners.T).T[:, :2] - 0.5


def sample(level: torch.Tensor, shape: tuple[int, int], matrices: np.ndarray, view: tuple[int, int]
           ) -> torch.Tensor:
    """[B, 1, h, w] views of one level ([hl, wl] of an image of `shape` (H, W)) through B matrices [B, 3, 3];
    outside the image is 0."""
    out_h, out_w = view
    vv, uu = torch.meshgrid(torch.arange(out_h, dtype=torch.float64) + 0.5,
                            torch.arange(out_w, dtype=torch.float64) + 0.5, indexing="ij")
    grid_in = torch.stack([uu.flatten(), vv.flatten(), torch.ones(out_h * out_w, dtype=torch.float64)])
    image = torch.from_numpy(matrices) @ grid_in  # [B, 3, h*w] image corner coordinates
    x = image[:, 0] / shape[1] * 2 - 1  # the level spans the image: normalised coordinates are the same
    y = image[:, 1] / shape[0] * 2 - 1
    grid = torch.stack([x, y], dim=-1).view(len(matrices), out_h, out_w, 2).float()
    source = level[None, None].expand(len(matrices), 1, *level.shape)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
