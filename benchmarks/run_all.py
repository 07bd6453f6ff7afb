"""`make bench`: every benchmark of benchmarks/, one table. BENCH_REPEATS (default 5) sets the repetitions."""

from __future__ import annotations

import osteoscreen.core.kernels  # noqa: F401  (first: the AVX2 kernel pin, before torch and numpy load)

# isort: split
import platform
import sys

import torch

import bench_finetune_step
import bench_frozen_loo
import bench_landmarks
import bench_memory
import bench_onnx
import bench_render
import bench_synth
import bench_upload_memory
from common import REPEATS, format_table
from hardware import cpu_name, peak
from osteoscreen.core.utils import keep_freed_memory


def main() -> int:
    keep_freed_memory()  # as the osteoscreen command does
    print(f"machine: {cpu_name()}, {peak().cores} cores, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), Python {platform.python_version()}; medians of {REPEATS} after a warm-up", flush=True)
    rows = []
    for bench in (bench_finetune_step, bench_frozen_loo, bench_memory, bench_render, bench_upload_memory,
                  bench_landmarks, bench_onnx, bench_synth):
        print(f"running {bench.__name__} ...", flush=True)
        rows += (new := bench.run())
        print(format_table(new), flush=True)  # as each finishes: a later failure loses nothing
    print(format_table(rows))
    missed = [row.measure for row in rows if row.met is False]
    if missed:
        print(f"targets missed: {len(missed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
