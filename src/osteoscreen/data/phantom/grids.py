"""Smooth maps drawn on a coarse grid, brought to the full image grid by separable linear interpolation.

Pixel centres are aligned (grid mode: the centre of output pixel i lies at (i + 0.5) * n_in / n_out - 0.5 input
pixels) and edges are clamped. Two gathers and a blend per axis: plain NumPy, which releases the GIL, so the
phantom's subjects interpolate in parallel threads.
"""

from __future__ import annotations

import numpy as np


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    position = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lower = np.minimum(position.astype(np.int64), n_in - 1)
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, (position - lower).astype(np.float32)


def upsample(low: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[h, w] -> [H, W] float32 by linear interpolation along each axis."""
    low = np.asarray(low, dtype=np.float32)
    left, right, across = _axis_weights(low.shape[1], shape[1])
    columns = low[:, left] + (low[:, right] - low[:, left]) * across[None, :]  # [h, W]: the strided gathers, small
    top, bottom, down = _axis_weights(low.shape[0], shape[0])
    return columns[top] + (columns[bottom] - columns[top]) * down[:, None]  # whole-row gathers
