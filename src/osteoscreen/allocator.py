"""Process-wide allocator setting for the `osteoscreen` command, the benchmarks and Ray tasks.

Frozen-mode training allocates and frees tensors of a few MiB at every step (weight gradients, casts,
activations of 70 stacked folds). glibc's malloc gives freed memory above its trim threshold back to the
system and takes it again at the next step: a page fault per 4 KiB page, about 3.2 M of them in the 4 heads of
a frozen leave-one-out (measured: docs/performance.md). Keeping freed memory for reuse removes most of them
and about a tenth of the heads' time; the price is that the process's resident size does not shrink after its
peak, which is what it has already reached once.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to 32 MiB come from the reusable heap
TRIM_THRESHOLD = 2**30  # give memory back to the system only when 1 GiB lies free at the heap's top


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
