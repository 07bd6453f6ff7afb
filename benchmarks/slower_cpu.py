"""Run a command on this machine's cores slowed down by a factor: a stand-in for a slower CPU of the same kind.

    .venv/bin/python benchmarks/slower_cpu.py 1.62 -- make test

On every core a busy process takes `1 - 1/factor` of each 10-ms period (a cgroup of its own with a CFS quota of
that share and the highest CPU weight, so that it always gets it), and the command gets the rest, whether it runs
one thread or one per core. For compute-bound work that is a CPU whose cores run `factor` times slower; memory
runs at this machine's speed (as it would, roughly, on a slower clock with the same memory). Calibration on a
2-core AMD EPYC (2026-12-07, two sessions): a pure-Python loop of one thread takes 1.49-1.83x as long at factor
1.62, two such loops at once 1.47-1.70x, and one 2.15x at factor 2 (the VM's own noise is 10-20 %).

docs/performance.md uses it with the factor measured between this project's 2-core AVX-512 VM and the 2.48 GHz
AVX2-only EPYC of the portability issue (1.62x for `osteoscreen synth`, the same code on both). Needs root and the
cgroup v1 `cpu` controller (/sys/fs/cgroup/cpu).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 10_000
HIGHEST_SHARES = 262_144


def _hog(cpu: int, share: float) -> tuple[subprocess.Popen, Path]:
    """A busy process pinned to `cpu` that takes `share` (0..1) of it, in its own cgroup."""
    group = CPU_CGROUP / f"osteoscreen-slower-cpu{cpu}"
    group.mkdir(exist_ok=True)
    (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (group / "cpu.cfs_quota_us").write_text(str(max(1000, round(share * PERIOD_US))))
    (group / "cpu.shares").write_text(str(HIGHEST_SHARES))

    def enter() -> None:  # in the child, before it spins
        (group / "cgroup.procs").write_text(str(os.getpid()))
        os.sched_setaffinity(0, {cpu})

    return subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=enter), group


def run_slower(factor: float, command: list[str]) -> int:
    """Run `command` with every core of this process's affinity slowed `factor` times; its exit status."""
    hogs = []
    try:
        for cpu in sorted(os.sched_getaffinity(0)):
            hogs.append(_hog(cpu, 1.0 - 1.0 / factor))
        time.sleep(0.2)  # every hog spinning before the command starts
        return subprocess.call(command)
    finally:
        for process, group in hogs:
            process.kill()
            process.wait()
            group.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("factor", type=float, help="how many times slower each core runs (> 1)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not 1.0 < args.factor <= 10.0:
        parser.error("give a factor in (1, 10] and a command after --")
    if os.geteuid() != 0 or not (CPU_CGROUP / "cpu.cfs_quota_us").exists():
        parser.error(f"needs root and the cgroup v1 cpu controller at {CPU_CGROUP}")
    return run_slower(args.factor, command)


if __name__ == "__main__":
    sys.exit(main())
