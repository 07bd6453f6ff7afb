"""Numeric precision of training and feature extraction: bf16 autocast where the hardware has it, else fp32.

`auto` resolves to `bf16` on CPUs with native bf16 dot products (AVX512-BF16 or AMX, as oneDNN reports) and on
CUDA devices that support bf16; elsewhere to `fp32`, because emulated bf16 is slower than fp32. Parameters,
optimiser state and losses stay fp32 either way (autocast runs matmuls and convolutions in bf16 only).
"""

from __future__ import annotations

import contextlib

import torch

from osteoscreen.errors import InputError

PRECISIONS = ("auto", "bf16", "fp32")


def bf16_native(device: str = "cpu") -> bool:
    """True when bf16 matmuls run natively on the device (not emulated)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """`auto` -> `bf16` or `fp32` for this machine; explicit choices pass through."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return precision


def autocast(precision: str, device: str = "cpu"):
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()
