"""Phantom synthesis: `osteoscreen synth` of the default cohort against the phantom issue's goal, and the PNG
writer against Pillow's encoder.

The default cohort (70 subjects, 16-bit PNG) is synthesised into a temporary folder with the CLI's threads (one
per core): one timed run, as it takes half a minute. Target: at most 30 s on 2 cores (the phantom issue's goal,
for 2 AVX2-class cores; reported without a verdict on other core counts). The PNG writer (`osteoscreen.io.png`:
one Up filter for the whole image, zlib level 1 run-length) writes one radiograph against Pillow's encoder with
the same zlib settings (its per-row filter search): the same pixels, target at least 2x faster.
"""

from __future__ import annotations

import io
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from common import Row, median_seconds
from hardware import peak
from osteoscreen.data.phantom.synthesis import PhantomConfig, render_subject, synthesise
from osteoscreen.io.png import png_bytes

GOAL_SECONDS, GOAL_CORES = 30.0, 2
PNG_SPEEDUP = 2.0


def _pillow_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def run() -> list[Row]:
    cores = peak().cores
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        synthesise(Path(folder) / "data", PhantomConfig())
        seconds = time.perf_counter() - start
    rows = [Row(f"synth, the default cohort (70 subjects, PNG; {cores} cores, one run, s)", f"{seconds:.1f}", "-",
                "-", f"<= {GOAL_SECONDS:.0f} s on {GOAL_CORES} cores",
                seconds <= GOAL_SECONDS if cores == GOAL_CORES else None)]
    pixels = render_subject(PhantomConfig(), 0, 2).pixels << 4
    with Image.open(io.BytesIO(png_bytes(pixels))) as image:
        assert np.array_equal(np.asarray(image), pixels)
    ours, pillow = median_seconds(lambda: png_bytes(pixels)), median_seconds(lambda: _pillow_png(pixels))
    rows.append(Row(f"16-bit PNG of one radiograph {pixels.shape[1]}x{pixels.shape[0]} (ms; median)",
                    f"{ours * 1e3:.0f} ({len(png_bytes(pixels)) / 2**20:.2f} MiB)",
                    f"{pillow * 1e3:.0f} ({len(_pillow_png(pixels)) / 2**20:.2f} MiB, Pillow)", f"{pillow / ours:.1f}x",
                    f">= {PNG_SPEEDUP:.0f}x", pillow / ours >= PNG_SPEEDUP))
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
