"""This machine's CPU and its theoretical peak arithmetic rate, computed from cores x clock x FLOP per cycle.

Clock: measured by timing a chain of dependent register-to-register integer adds (one cycle each, so adds per
second = cycles per second) in a tiny C function compiled with the system's `cc`; without a compiler, the nominal
`cpu MHz` of /proc/cpuinfo (which under-reports a boosting CPU). Not adds of an immediate: recent Intel cores fold
those at rename (that chain read 11.9 GHz on a Xeon).

FLOP per cycle per core, fp32: FMA units x fp32 lanes per unit x 2 (multiply and add). AMD Zen 4 executes
AVX-512 on two 256-bit FMA pipes (8 lanes each); Intel server cores with AVX-512 have two 512-bit FMA units
(16 lanes); AVX2 cores two 256-bit units. bf16 (AVX512-BF16 VDPBF16PS: two bf16 products per fp32 lane) doubles it.
With the AVX2 kernel pin (osteoscreen.core.kernels, the default) the peak is that of the AVX2 kernels in use.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from osteoscreen.core.kernels import cpu_name, cpuinfo
from osteoscreen.core.precision import bf16_native

CHAIN_C = """
void chain(long n, long step) {
    long x = 0;
    for (long i = 0; i < n; i++) {
        __asm__ volatile("add %1, %0\\n\\tadd %1, %0\\n\\tadd %1, %0\\n\\tadd %1, %0\\n\\t"
                         "add %1, %0\\n\\tadd %1, %0\\n\\tadd %1, %0\\n\\tadd %1, %0" : "+r"(x) : "r"(step));
    }
}
"""
ADDS_PER_ITERATION = 8


@dataclass(frozen=True)
class Peak:
    cores: int
    clock_ghz: float
    clock_source: str
    fp32_flop_per_cycle: int
    bf16_flop_per_cycle: int
    vector_note: str

    @property
    def fp32_gflops(self) -> float:
        return self.cores * self.clock_ghz * self.fp32_flop_per_cycle

    @property
    def bf16_gflops(self) -> float:
        return self.cores * self.clock_ghz * self.bf16_flop_per_cycle

    def explain(self) -> str:
        return (f"peak = {self.cores} cores x {self.clock_ghz:.2f} GHz ({self.clock_source}) x "
                f"{self.fp32_flop_per_cycle} fp32 FLOP/cycle ({self.vector_note}) = {self.fp32_gflops:.0f} GFLOP/s "
                f"fp32; bf16 x{self.bf16_flop_per_cycle // self.fp32_flop_per_cycle} = {self.bf16_gflops:.0f} GFLOP/s")


def measured_clock_ghz() -> float | None:
    """Cycles per second of one core under load, from a dependent-add chain; None without a C compiler."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    with tempfile.TemporaryDirectory() as folder:
        source, library = Path(folder) / "chain.c", Path(folder) / "chain.so"
        source.write_text(CHAIN_C)
        try:
            subprocess.run(["cc", "-O1", "-shared", "-fPIC", str(source), "-o", str(library)], check=True,
                           capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        chain = ctypes.CDLL(str(library)).chain
        chain.argtypes = [ctypes.c_long, ctypes.c_long]
        iterations, rates = 50_000_000, []
        chain(iterations // 10, 1)  # warm up: let the core reach its working clock
        for _ in range(5):
            start = time.perf_counter()
            chain(iterations, 1)
            rates.append(iterations * ADDS_PER_ITERATION / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2] / 1e9


def _vector_units(flags: set[str], vendor: str, family: int) -> tuple[int, str]:
    """fp32 FLOP per cycle per core of the kernels in use: with osteoscreen.core.kernels' AVX2 pin in effect (torch's
    CPU capability AVX2), those of AVX2 whatever wider units the CPU has."""
    import torch

    if torch.backends.cpu.get_cpu_capability() == "AVX2" and "avx2" in flags and "fma" in flags:
        return 2 * 8 * 2, "2 AVX2 FMA units x 8 fp32 lanes x 2 (the pinned AVX2 kernels)"
    if "avx512f" in flags and vendor == "AuthenticAMD" and family == 25:
        return 2 * 8 * 2, "Zen 4: 2 FMA pipes x 8 fp32 lanes (AVX-512 as 2x256 bit) x 2"
    if "avx512f" in flags:
        return 2 * 16 * 2, "2 AVX-512 FMA units x 16 fp32 lanes x 2"
    if "avx2" in flags and "fma" in flags:
        return 2 * 8 * 2, "2 AVX2 FMA units x 8 fp32 lanes x 2"
    return 4 * 2, "no FMA vectors detected: 4 lanes x 2"


def peak() -> Peak:
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    per_cycle, note = _vector_units(flags, info.get("vendor_id", ""), int(info.get("cpu family", "0") or 0))
    bf16 = per_cycle * 2 if bf16_native() else per_cycle  # as oneDNN reports it, under the kernel pin
    clock = measured_clock_ghz()
    source = "measured, dependent-add chain"
    if clock is None:
        clock, source = float(info.get("cpu MHz", "0") or 0) / 1000, "nominal, /proc/cpuinfo"
    return Peak(len(os.sched_getaffinity(0)), clock, source, per_cycle, bf16, note)


if __name__ == "__main__":
    print(cpu_name())
    print(peak().explain())
