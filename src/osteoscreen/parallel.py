"""Order-preserving parallel map over threads, for I/O-bound work (image decoding releases the GIL)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor


def thread_map(function: Callable, items: Sequence, progress: Callable[[Iterable], Iterable] = iter,
               threads: int | None = None) -> list:
    """[function(item) for item in items] on up to `threads` threads (default: one per core), in order.

    An exception in any call is raised here, as the loop would raise it.
    """
    threads = threads or os.cpu_count() or 1
    if threads == 1 or len(items) < 2:
        return [function(item) for item in progress(items)]
    with ThreadPoolExecutor(threads) as pool:
        return list(progress(pool.map(function, items)))
