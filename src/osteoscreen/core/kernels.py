"""Which CPU kernels compute the numbers: the AVX2 code paths of every numeric library, on any x86-64 CPU.

PyTorch, oneDNN, MKL, NumPy and OpenBLAS each pick their kernels for the CPU they run on (AVX-512 where present,
else AVX2), and kernels of different widths sum in different orders: the same fp32 command then gives other last
digits on another CPU, which a 100-epoch fit and a pooled AUROC turn into other printed figures (measured:
docs/performance.md). `pin_kernels`, run when `osteoscreen` is imported, asks each library for its AVX2 kernels
before it loads them, so a computation runs the same code, and gives the same bits, on any x86-64 CPU with AVX2
(Intel or AMD, with AVX-512 or without), given the same intra-op thread count (osteoscreen.core.utils). MKL's matrix
products take its COMPATIBLE branch, the one MKL keeps identical on Intel and AMD CPUs (its AVX2 branch holds on
Intel only), which costs the heads a fifth to a third more time (docs/performance.md). `fingerprint()` hashes
a small computation through each of these libraries, so two runs' records show whether their kernels agreed.
Nothing is pinned on other CPUs (ARM, or x86-64 without AVX2), where results may differ in the last digits.

Variables already set by the user are left as they are. `OSTEOSCREEN_KERNELS=native` keeps every library's own
choice: what `--precision bf16` needs to run at native bf16 speed (oneDNN's bf16 kernels are AVX-512 or AMX).
`kernel_record()` says what is in effect; cv runs record it (config.json, metrics.json, the report).
"""

from __future__ import annotations

import os
import platform
import sys

NATIVE_SWITCH = "OSTEOSCREEN_KERNELS"
PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised kernels (read when torch loads)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's convolutions and matmuls (read at the first one)
    # MKL's conditional numerical reproducibility branch (read when MKL loads). Not AVX2: that branch holds on
    # Intel CPUs only (on AMD MKL runs its AUTO branch instead; measured: the same bits as unset on an AMD EPYC);
    # COMPATIBLE is the branch MKL keeps identical on Intel and non-Intel CPUs (torch's fp32 matmuls: the heads).
    "MKL_CBWR": "COMPATIBLE",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy's OpenBLAS: its AVX2 kernels (read when numpy loads)
}
NUMPY_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR"  # NumPy >= 2.4's dispatch targets above AVX2


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of Linux's /proc/cpuinfo (empty elsewhere)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    return set(cpuinfo().get("flags", "").split())


def cpu_name() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def pin_kernels() -> dict[str, str]:
    """Set the variables of PINNED (and NumPy's, where it has AVX-512 targets) that are not set yet; returns what
    it set. No-op with OSTEOSCREEN_KERNELS=native, off x86-64 and on CPUs without AVX2. Effective for a library
    only if it has not loaded yet (so `osteoscreen` is best imported before torch and numpy)."""
    if os.environ.get(NATIVE_SWITCH) == "native" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    flags = cpu_flags()
    if "avx2" not in flags:
        return {}
    wanted = dict(PINNED)
    if "avx512f" in flags and _numpy_version() >= (2, 4):
        wanted["NPY_DISABLE_CPU_FEATURES"] = NUMPY_AVX512
    applied = {name: value for name, value in wanted.items() if name not in os.environ}
    os.environ.update(applied)
    return applied


def _numpy_version() -> tuple[int, ...]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return tuple(int(part) for part in version("numpy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return (0,)


def fingerprint() -> str:
    """12 hex digits of the SHA-256 of fixed computations through each library that decides our numbers: torch's
    matrix product (MKL), a convolution and a depthwise one (oneDNN), torch's vectorised exp and sum (ATen),
    NumPy's matrix product (OpenBLAS) and its exp, log and sin (NumPy's SIMD loops), on one intra-op thread.
    Two machines with the same fingerprint ran the same kernels on these operations; a different one says where
    last digits may differ. About 10 ms."""
    import hashlib

    import numpy as np
    import torch

    from osteoscreen.core.utils import intra_op_threads

    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(96, 200, generator=generator), torch.rand(200, 48, generator=generator)
    image = torch.rand(2, 8, 24, 24, generator=generator)
    weight, depthwise = torch.rand(16, 8, 3, 3, generator=generator), torch.rand(8, 1, 3, 3, generator=generator)
    x = np.random.default_rng(0).random((96, 200))
    with intra_op_threads(1), torch.inference_mode():
        results = [a @ b, torch.nn.functional.conv2d(image, weight, padding=1),
                   torch.nn.functional.conv2d(image, depthwise, padding=1, groups=8), torch.exp(a).sum(1)]
        arrays = [t.numpy() for t in results] + [x @ x.T, np.exp(x), np.log1p(x), np.sin(x.astype(np.float32))]
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


def kernel_record() -> dict:
    """What decides the kernels of this process: the CPU, torch's CPU capability in use, the variables of PINNED
    as set, whether torch and numpy loaded after the pin (pinned) or before it, and the kernels' fingerprint."""
    import torch

    flags = cpu_flags()
    return {"machine": platform.machine(), "cpu": cpu_name(),
            "cpu_avx512": "avx512f" in flags, "cpu_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "pinned": _PINNED_AT_IMPORT, "variables": {name: os.environ.get(name) for name in
                                                      [*PINNED, "NPY_DISABLE_CPU_FEATURES", NATIVE_SWITCH]},
            "fingerprint": fingerprint()}


def _pinned_at_import() -> bool:
    """True when the pin is in effect: set (now or by the user) before torch and numpy loaded."""
    pin_kernels()
    loaded_before = "torch" in sys.modules or "numpy" in sys.modules
    return not loaded_before and os.environ.get("ATEN_CPU_CAPABILITY") == PINNED["ATEN_CPU_CAPABILITY"]


_PINNED_AT_IMPORT = _pinned_at_import()
