"""Where cross-validation jobs run: `LocalBackend` (this process; fine-tune folds in worker processes) or
`RayBackend` (one Ray task per job, osteoscreen.core.distributed). Results do not depend on the backend."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

import torch

from osteoscreen.core.distributed import TaskResources, cluster_slots, ray_map, ray_session
from osteoscreen.core.utils import Counted, available_cores, intra_op_threads, side_by_side
from osteoscreen.data.cohort import Cohort
from osteoscreen.evaluation.crossval import CVConfig, FoldRunner, Job, run_job
from osteoscreen.models.heads import head_of

_worker_state: dict = {}


def _start_worker(cohort: Cohort, config: CVConfig) -> None:
    torch.set_num_threads(config.train.threads)  # what every fit sets again: the same threads as in one process
    _worker_state.update(cohort=cohort, config=config, runners={})


def _run_in_worker(job: Job) -> list[dict]:
    runners = _worker_state["runners"]
    if job.seed not in runners:
        runners[job.seed] = FoldRunner(_worker_state["cohort"], _worker_state["config"], job.seed)
    return runners[job.seed].run(job.method, list(job.folds))


class LocalBackend:
    """This machine: frozen heads and baselines in this process, side by side on threads (`side_by_side`: each job
    on config.train.threads intra-op threads, sharing LBP and frozen features), fine-tune folds in `workers`
    spawned processes when workers > 1, else one after another here. Results do not depend on either."""

    whole_methods = False  # cheap methods run fold by fold (a fold file each as it finishes)

    def __init__(self, workers: int = 1):
        self.workers = workers

    def session(self):
        return contextlib.nullcontext()

    def parallelism(self) -> int:
        return self.workers

    def execute(self, cohort: Cohort, config: CVConfig, jobs: list[Job], progress: Callable):
        """Yield each job's records as it finishes."""
        def finetuned(job: Job) -> bool:
            return head_of(job.method) is not None and config.train.mode == "finetune"

        runners = {seed: FoldRunner(cohort, config, seed) for seed in {job.seed for job in jobs}}
        threads = 1 if config.train.device.startswith("cuda") else side_by_side(config.train.threads)
        # longest first (a frozen head's stacked folds), so the cheap folds fill the other threads around them
        side = sorted((job for job in jobs if not finetuned(job)), key=lambda job: -len(job.folds))
        in_workers = [job for job in jobs if finetuned(job)] if self.workers > 1 else []
        here = [job for job in jobs if finetuned(job) and not in_workers]
        pool = ThreadPoolExecutor(threads)
        try:
            with intra_op_threads(config.train.threads):  # this thread's count stays what every job sets
                futures = [pool.submit(runners[job.seed].run, job.method, list(job.folds)) for job in side]
                for future in progress(Counted(as_completed(futures), len(futures))) if futures else ():
                    yield future.result()
        finally:
            pool.shutdown(cancel_futures=True)
        for job in progress(here) if here else ():  # fine-tune fits draw dropout from torch's global generator
            yield runners[job.seed].run(job.method, list(job.folds))
        if in_workers:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(self.workers, context, _start_worker, (cohort, config)) as pool:
                futures = [pool.submit(_run_in_worker, job) for job in in_workers]
                for future in progress(Counted(as_completed(futures), len(futures))):
                    yield future.result()


class RayBackend:
    """A Ray cluster (`address`), or a local Ray instance when address is None: one Ray task per job, each asking
    for `cpus` CPUs and `gpus` GPUs; a task whose worker dies is retried (`retries`). `task` is the function a
    task runs (run_job)."""

    whole_methods = True  # baselines: one task per method and seed, so LBP features are computed once per task

    def __init__(self, address: str | None = None, cpus: float = 1, gpus: float = 0, retries: int = 3,
                 task: Callable[[tuple[Cohort, CVConfig], Job], list[dict]] = run_job):
        self.address, self.task = address, task
        self.resources = TaskResources(cpus, gpus, retries)

    def session(self):
        return ray_session(self.address)

    def parallelism(self) -> int:
        return cluster_slots(self.resources)

    def execute(self, cohort: Cohort, config: CVConfig, jobs: list[Job], progress: Callable):
        for _, records in progress(ray_map(self.task, (cohort, config), jobs, self.resources)):
            yield records


FOLDS_PER_GPU = 8  # fine-tune folds training at once on one CUDA device (see docs/performance.md)
FOLD_MEMORY = 4 * 2**30  # bytes a fine-tune fold may take on the CPU (measured peaks 1.9-3.6 GiB: performance.md)


def default_workers(mode: str, device: str = "cpu", threads: int = 1) -> int:
    """Worker processes for fine-tune folds. On the CPU as many folds of `threads` intra-op threads as fill the
    cores, within FOLD_MEMORY each of the machine's memory. On a GPU, FOLDS_PER_GPU processes share the device,
    each training its own folds exactly as alone: one fold's batch of 256 patches leaves a large GPU mostly idle,
    waiting for the host between kernels, and the processes fill those gaps with each other's work."""
    if mode != "finetune":
        return 1
    if device.startswith("cuda"):
        return max(1, min(FOLDS_PER_GPU, available_cores()))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(side_by_side(threads), memory // FOLD_MEMORY))
