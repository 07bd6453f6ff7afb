"""Ray plumbing shared by `cv --backend ray` and `predict --backend ray`.

Ray is an optional extra (`pip install 'osteoscreen[ray]'`): it is imported only here and only when a Ray backend
is asked for. `ray_session` joins a cluster (`--address`) or starts a local instance and stops it afterwards;
`ray_map` runs one task per item, the large shared input put into the object store once, and yields results as
tasks finish. A task whose worker process dies (killed, out of memory, node lost) is retried by Ray up to
`retries` times; an exception raised by the task itself is not retried and stops the run with its own message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from osteoscreen.core.errors import InputError
from osteoscreen.core.utils import keep_freed_memory

INSTALL_HINT = "pip install 'osteoscreen[ray]' (make install does it)"


@dataclass(frozen=True)
class TaskResources:
    """What one task asks of the cluster: CPUs, GPUs (fractions share a GPU) and retries after a worker dies."""

    cpus: float = 1
    gpus: float = 0
    retries: int = 3

    def __post_init__(self):
        if self.cpus <= 0 or self.gpus < 0 or self.retries < 0:
            raise InputError(f"task resources need cpus > 0, gpus >= 0, retries >= 0; got {self}")


def import_ray():
    """The ray module, or a one-line InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"backend='ray' needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None):
    """Ray, initialised: joins `address` ("auto", "HOST:PORT", "ray://HOST:10001"), or starts a local instance when
    address is None; shuts down only what it started. An already initialised Ray (a test's, a notebook's) is used
    as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise InputError(f"address={address}: cannot join a Ray cluster ({str(error).splitlines()[0]})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_slots(resources: TaskResources) -> int:
    """How many tasks of this size the cluster runs at once (by CPUs, and by GPUs when tasks ask for them)."""
    ray = import_ray()
    total = ray.cluster_resources()
    slots = total.get("CPU", 1) // resources.cpus
    if resources.gpus:
        slots = min(slots, total.get("GPU", 0) // resources.gpus)
    return max(1, int(slots))


class ResultStream:
    """(position, result) pairs in the order tasks finish; len() is the number of tasks (for progress bars)."""

    def __init__(self, refs: dict, ray):
        self._refs, self._ray, self._count = refs, ray, len(refs)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[tuple[int, object]]:
        ray, pending = self._ray, dict(self._refs)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                position = pending.pop(ready[0])
                try:
                    yield position, ray.get(ready[0])
                except ray.exceptions.RayTaskError as error:  # the task's own exception, re-raised as itself
                    raise error.cause from None
        finally:
            for ref in pending:  # an interrupted run leaves no task running
                ray.cancel(ref, force=True)


def _call(function: Callable, shared: object, item: object) -> object:
    keep_freed_memory()  # the worker process runs our jobs: set it up as the osteoscreen command sets up its own
    return function(shared, item)


def ray_map(function: Callable, shared: object, items: Sequence, resources: TaskResources) -> ResultStream:
    """function(shared, item) as one Ray task per item (any picklable callable, a functools.partial too);
    `function` and `shared` go into the object store once."""
    ray = import_ray()
    remote = ray.remote(_call).options(num_cpus=resources.cpus, num_gpus=resources.gpus,
                                       max_retries=resources.retries, retry_exceptions=False)
    function_ref, shared_ref = ray.put(function), ray.put(shared)
    return ResultStream({remote.remote(function_ref, shared_ref, item): position
                         for position, item in enumerate(items)}, ray)
