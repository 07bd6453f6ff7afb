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


ROWS_PER_BLOCK = 32  # output rows interpolated at once: the block's temporaries stay in cache


def upsample(low: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[h, w] -> [H, W] float32 by linear interpolation along each axis: a + (b - a) * t per axis, the
    differences b - a of the vertical pass taken once on the coarse grid, the full-size rows written in blocks
    (one pass over the output instead of five full-size temporaries; the same float32 operations, so the same
    bits)."""
    low = np.asarray(low, dtype=np.float32)
    left, right, across = _axis_weights(low.shape[1], shape[1])
    columns = low[:, left] + (low[:, right] - low[:, left]) * across[None, :]  # [h, W]: the strided gathers, small
    top, bottom, down = _axis_weights(low.shape[0], shape[0])
    rises = columns[np.minimum(np.arange(len(columns)) + 1, len(columns) - 1)] - columns  # [h, W]
    out = np.empty(shape, np.float32)
    for start in range(0, shape[0], ROWS_PER_BLOCK):
        rows = slice(start, start + ROWS_PER_BLOCK)
        block = out[rows]
        np.multiply(rises[top[rows]], down[rows, None], out=block)
        block += columns[top[rows]]
    return out
