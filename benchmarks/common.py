"""Shared benchmark plumbing: repetitions, timing, the default cohort on disk, the result table."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))  # timed repetitions after one warm-up
COHORT_DIR = Path(os.environ.get("BENCH_DATA", "runs/bench/data"))


@dataclass
class Row:
    measure: str
    ours: str
    reference: str
    ratio: str
    target: str
    met: bool | None  # None: reported, no target

    def cells(self) -> list[str]:
        verdict = "-" if self.met is None else ("yes" if self.met else "NO")
        return [self.measure, self.ours, self.reference, self.ratio, self.target, verdict]


def median_seconds(function: Callable[[], object], repeats: int = REPEATS, warmup: int = 1) -> float:
    """Median wall time of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def default_cohort() -> Path:
    """The 70-subject default phantom cohort (synthesised once into runs/bench/data; not timed)."""
    if not (COHORT_DIR / "subjects.csv").exists():
        from osteoscreen.data.phantom.synthesis import PhantomConfig, synthesise

        print(f"synthesising the default cohort into {COHORT_DIR} (once, not timed) ...", flush=True)
        synthesise(COHORT_DIR, PhantomConfig())
    return COHORT_DIR


def format_table(rows: list[Row]) -> str:
    header = ["measure", "ours", "reference", "ratio", "target", "met"]
    cells = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
