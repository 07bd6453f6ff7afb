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


def upsample(low: np.ndarray, shape: tuple[int, int], window: tuple[slice, slice] | None = None) -> np.ndarray:
    """[h, w] -> [H, W] float32 by linear interpolation along each axis: a + (b - a) * t per axis, the
    differences b - a of the vertical pass taken once on the coarse grid, the full-size rows written in blocks
    (one pass over the output instead of five full-size temporaries; the same float32 operations, so the same
    bits). With `window` (rows and columns of the [H, W] grid, steps of 1) only that part is computed and
    returned, the same values as the whole map's."""
    low = np.asarray(low, dtype=np.float32)
    rows, cols = window or (slice(0, shape[0]), slice(0, shape[1]))
    left, right, across = (weights[cols] for weights in _axis_weights(low.shape[1], shape[1]))
    columns = low[:, left] + (low[:, right] - low[:, left]) * across[None, :]  # [h, w]: the strided gathers, small
    top, _, down = (weights[rows] for weights in _axis_weights(low.shape[0], shape[0]))
    rises = columns[np.minimum(np.arange(len(columns)) + 1, len(columns) - 1)] - columns  # [h, w]
    out = np.empty((len(top), len(left)), np.float32)
    for start in range(0, len(top), ROWS_PER_BLOCK):
        block_rows = slice(start, start + ROWS_PER_BLOCK)
        block = out[block_rows]
        np.multiply(rises[top[block_rows]], down[block_rows, None], out=block)
        block += columns[top[block_rows]]
    return out


def covering_box(mask: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of the full grid `shape` that cover the True cells of a coarse [h, w] mask (the same
    field of view), with a coarse cell to spare on each side; the whole grid when nothing is True."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return slice(0, shape[0]), slice(0, shape[1])
    scale_y, scale_x = shape[0] / mask.shape[0], shape[1] / mask.shape[1]
    top, bottom = int((rows[0] - 1) * scale_y), int(np.ceil((rows[-1] + 2) * scale_y))
    left, right = int((cols[0] - 1) * scale_x), int(np.ceil((cols[-1] + 2) * scale_x))
    return slice(max(top, 0), min(bottom, shape[0])), slice(max(left, 0), min(right, shape[1]))
