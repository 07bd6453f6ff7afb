"""Numeric precision of training and feature extraction: fp32 by default, bf16 autocast as an explicit speed option.

The default is `fp32` on every machine, so the same command gives the same table on any CPU (a default that
followed the hardware moved the demo table by up to 10 points of balanced accuracy between a CPU with native bf16
and one without; docs/performance.md). `bf16` (`--precision bf16`) runs matmuls and convolutions under bf16
autocast: about twice as fast where the CPU has native bf16 dot products (AVX512-BF16 or AMX) or on a CUDA device
with bf16, slower than fp32 where bf16 is emulated (a warning says so). Parameters, optimiser state and losses stay
fp32 either way.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

PRECISIONS = ("fp32", "bf16")
DEFAULT_PRECISION = "fp32"


def bf16_native(device: str = "cpu") -> bool:
    """True when bf16 matmuls run natively on the device (not emulated)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_if_emulated(precision: str, device: str = "cpu") -> None:
    """bf16 on a device that only emulates it warns: it is then slower than fp32."""
    if precision == "bf16" and not bf16_native(device):
        warnings.warn(f"precision='bf16': no native bf16 on this {device.split(':')[0].upper()} with the kernels in "
                      "use, so bf16 is emulated and slower than fp32 (a CPU with AVX512-BF16 or AMX runs it natively "
                      "with OSTEOSCREEN_KERNELS=native; osteoscreen.core.kernels)", stacklevel=2)


def autocast(precision: str, device: str = "cpu"):
    """The autocast context for a precision (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()
