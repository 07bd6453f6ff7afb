"""Process-level helpers: an order-preserving thread map, the intra-op thread count of torch, and glibc's allocator
setting.

Threads: float sums in torch's kernels (convolution weight gradients, reductions, even some forward passes) are
split across intra-op threads, so their last bits depend on the thread count. Every computation that decides a
number therefore runs under `intra_op_threads(config.threads)` (TrainConfig.threads, default 1) whichever process
runs it (this one, a fold worker or a Ray task), and the tool uses more cores by running independent computations
side by side (`side_by_side`): results do not depend on the number of cores.

Allocator: frozen-mode training allocates and frees tensors of a few MiB at every step (weight gradients, casts,
activations of 70 stacked folds). glibc's malloc gives freed memory above its trim threshold back to the
system and takes it again at the next step: a page fault per 4 KiB page, about 3.2 M of them in the 4 heads of
a frozen leave-one-out (measured: docs/performance.md). Keeping freed memory for reuse (`keep_freed_memory`, called
by the `osteoscreen` command, the benchmarks and Ray tasks) removes most of them and about a tenth of the heads'
time; the price is that the process's resident size does not shrink after its peak, which it has reached once.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to 32 MiB come from the reusable heap
TRIM_THRESHOLD = 2**30  # give memory back to the system only when 1 GiB lies free at the heap's top


def thread_map(function: Callable, items: Sequence, progress: Callable[[Iterable], Iterable] = iter,
               threads: int | None = None) -> list:
    """[function(item) for item in items] on up to `threads` threads (default: one per available core), in order;
    for work that releases the GIL (image decoding, LBP, torch kernels). An exception in any call is raised here,
    as the loop would raise it."""
    threads = threads or available_cores()
    if threads == 1 or len(items) < 2:
        return [function(item) for item in progress(items)]
    with ThreadPoolExecutor(threads) as pool:
        return list(progress(Counted(pool.map(function, items), len(items))))


class Counted:
    """An iterator with a known length, so that a progress bar over `pool.map` or `as_completed` shows a total."""

    def __init__(self, iterator: Iterable, count: int):
        self.iterator, self.count = iterator, count

    def __iter__(self):
        return iter(self.iterator)

    def __len__(self) -> int:
        return self.count


class intra_op_threads:
    """Run with a given number of torch intra-op threads. Also valid in a thread of `thread_map`: OpenMP and MKL
    keep the count per calling thread, so each thread sets its own."""

    def __init__(self, count: int):
        self.count = count

    def __enter__(self):
        import torch  # here, not at the top: the commands that need no torch (synth, validate) start without it

        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.count)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.previous)


_GLOBAL_RNG = threading.Lock()


@contextlib.contextmanager
def seeded(seed: int):
    """torch's global CPU generator seeded, held by this thread alone until the block ends: computations side by
    side in threads (`side_by_side`) each draw their initialisation as they would alone; the caller's generator
    state comes back after the block (no side effect on a notebook's random numbers)."""
    import torch

    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and Ray narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def side_by_side(threads: int) -> int:
    """How many computations of `threads` intra-op threads each fill this machine's cores."""
    return max(1, available_cores() // threads)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
