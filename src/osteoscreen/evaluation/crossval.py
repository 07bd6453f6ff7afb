"""Cross-validation of every method on the same folds, resumable, with a leakage guard (DESIGN §4, §6).

Each fold's result is written atomically to RUN/folds/seed-<seed>/<method>/<fold>.json as soon as it finishes; a
rerun of the same command skips finished folds, so an interrupted run ends with the same files as an uninterrupted
one, whichever backend ran which fold (a run started locally can continue on a Ray cluster, or the reverse).
RUN/config.json pins the configuration: a different configuration in the same RUN is refused.

Work is cut into jobs (one seed, one method, some folds): frozen-mode CNN heads of up to FOLD_CHUNK folds train
as one stacked computation, every other method fold by fold. A backend runs the jobs: `LocalBackend` in this
process, fine-tune folds in worker processes; `RayBackend` as Ray tasks (osteoscreen.distributed).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import LeaveOneOut, RepeatedStratifiedKFold

from osteoscreen import __version__
from osteoscreen.atomic import write_text_atomic
from osteoscreen.baselines import BASELINES, CLINICAL, build_baseline, lbp_features
from osteoscreen.data.patches import to_uint8
from osteoscreen.distributed import TaskResources, cluster_slots, ray_map, ray_session
from osteoscreen.errors import InputError
from osteoscreen.evaluation.calibration import calibration_metrics
from osteoscreen.evaluation.metrics import (
    decision_metrics,
    delong_test,
    mcnemar_exact,
    repeat_auroc,
    screening_metrics,
)
from osteoscreen.models.heads import CLINICAL_HEADS, HEADS, head_of
from osteoscreen.operating_point import DecisionRule, FittedRule, fit_rule, inner_splits
from osteoscreen.tasks import DEFAULT_TASK, check_task
from osteoscreen.training import (
    FOLD_CHUNK,
    Cohort,
    TrainConfig,
    finetune_steps,
    fit,
    fit_frozen_folds,
    intra_op_threads,
    predict_proba,
    time_finetune_step,
)

DEFAULT_METHODS: tuple[str, ...] = BASELINES + HEADS  # the image methods and their baselines
#: also, when asked for: clinical (age and sex only) and every head + clinical
METHODS: tuple[str, ...] = DEFAULT_METHODS + (CLINICAL,) + CLINICAL_HEADS
REFERENCE_METHOD = "group-attention"
PROTOCOLS = ("loo", "kfold")


class LeakageError(RuntimeError):
    """A subject appears on both the training and the test side of a fold (a bug, never a user error)."""


@dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class CVConfig:
    methods: tuple[str, ...] = DEFAULT_METHODS
    protocol: str = "loo"
    folds: int = 5
    repeats: int = 10
    seeds: tuple[int, ...] = (0,)  # each seed: its own k-fold split, initialisations and augmentation draws
    prevalence: float | None = None  # of the screened population, for decision curves (None: the cohort's)
    rule: DecisionRule = field(default_factory=DecisionRule)  # calibration and threshold, fitted per training fold
    leave_pair_out: bool = False  # leave-one-out runs: also the leave-pair-out AUROC (one fit per pos.-neg. pair)
    task: str = DEFAULT_TASK  # the binary question (tasks.TASKS): which WHO classes are positive, negative, excluded
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(METHODS)}")
        if self.protocol not in PROTOCOLS:
            raise InputError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.folds < 2 or self.repeats < 1:
            raise InputError(f"need --folds >= 2 and --repeats >= 1, got {self.folds} and {self.repeats}")
        check_task(self.task)
        if self.leave_pair_out and (self.protocol != "loo" or self.train.mode != "frozen"):
            raise InputError("--leave-pair-out is for --protocol loo in frozen mode (it fits one model per "
                             "positive-negative pair: about 1,000 for 70 subjects)")
        if self.prevalence is not None and not 0 < self.prevalence < 1:
            raise InputError(f"--prevalence must lie strictly between 0 and 1, got {self.prevalence}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise InputError(f"--seeds needs distinct seeds >= 0, got {','.join(map(str, self.seeds)) or '(none)'}")


@dataclass(frozen=True)
class Job:
    """One unit of work: a method on some folds of one seed."""

    seed: int
    method: str
    folds: tuple[Fold, ...]


def make_folds(labels: np.ndarray, config: CVConfig, seed: int = 0) -> list[Fold]:
    """Leave-one-out, or repeated stratified k-fold (split by `seed`); fold names are stable file names."""
    indices = np.arange(len(labels))
    if config.protocol == "loo":
        splitter = LeaveOneOut().split(indices)
        return [Fold(f"loo-{test[0]:04d}", train, test) for train, test in splitter]
    if np.bincount(labels, minlength=2).min() < config.folds:
        raise InputError(f"--folds {config.folds} exceeds the size of the smaller class "
                         f"({np.bincount(labels, minlength=2).min()} subjects)")
    splitter = RepeatedStratifiedKFold(n_splits=config.folds, n_repeats=config.repeats, random_state=seed)
    return [Fold(f"r{i // config.folds:02d}-f{i % config.folds:02d}", train, test)
            for i, (train, test) in enumerate(splitter.split(indices, labels))]


def check_no_leakage(folds: list[Fold], subject_ids: list[str]) -> None:
    """Raise LeakageError if any subject id is on both sides of a fold."""
    for fold in folds:
        shared = {subject_ids[i] for i in fold.train} & {subject_ids[i] for i in fold.test}
        if shared:
            raise LeakageError(f"fold {fold.name}: subject(s) {sorted(shared)} in both train and test")


def package_versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ["torch", "numpy", "scipy", "scikit-learn", "scikit-image", "pydicom", "pillow", "safetensors"]
    return {"python": platform.python_version(), "osteoscreen": __version__, **{n: version(n) for n in names}}


def _write_json(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def prepare_run(run_dir: Path, config: CVConfig, dataset_info: dict) -> dict:
    """Write RUN/config.json, or check that an existing one holds the same configuration."""
    identity = {"dataset_hash": dataset_info["hash"], "cv": asdict(config)}
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as read back from disk
    path = run_dir / "config.json"
    if path.exists():
        previous = _with_later_options(json.loads(path.read_text()).get("identity"))
        if previous != identity:
            differing = sorted(k for k in set(previous or {}) | set(identity)
                               if (previous or {}).get(k) != identity.get(k))
            detail = _first_difference(previous or {}, identity)
            raise InputError(f"{run_dir} holds results of a different configuration ({', '.join(differing)}"
                             f"{': ' + detail if detail else ''}); use another --out or delete it")
        return json.loads(path.read_text())
    record = {"identity": identity, "dataset": dataset_info, "versions": package_versions(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_json(path, record)
    return record


def _later_options() -> dict:
    """CVConfig options added after runs existed, with the value that means what such a run did."""
    return json.loads(json.dumps({"prevalence": None, "rule": asdict(DecisionRule()), "leave_pair_out": False,
                                  "task": DEFAULT_TASK}))


def _with_later_options(identity: dict | None) -> dict | None:
    """A stored run identity with options it predates filled in at their neutral value, so that a run made before
    an option existed resumes (and its report is rebuilt) when the option is left at that value."""
    if not isinstance(identity, dict) or not isinstance(identity.get("cv"), dict):
        return identity
    cv = {**_later_options(), **identity["cv"]}
    train = cv.get("train")
    if isinstance(train, dict):
        later = {"clinical": False}  # a run before +clinical methods trained plain heads
        if train.get("mode") == "frozen":
            later["patch_feature"] = TrainConfig().patch_feature  # frozen mode never read it
        cv["train"] = {**later, **train}
    return {**identity, "cv": cv}


def _first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return ""
    return f"{prefix.rstrip('.')} was {a!r}, now {b!r}" if a != b else ""


class FoldRunner:
    """Runs methods on folds; LBP features and frozen CNN features are computed once and shared.

    Frozen-mode CNN heads of many folds train together (`fit_frozen_folds`); everything else runs fold by fold.
    """

    def __init__(self, cohort: Cohort, config: CVConfig, seed: int):
        self.cohort, self.config, self.seed = cohort, config, seed
        self._lbp: np.ndarray | None = None
        self._covariates: np.ndarray | None = None

    def lbp(self) -> np.ndarray:
        if self._lbp is None:
            context = self.cohort.patch_config.context
            self._lbp = np.stack([lbp_features(to_uint8(p.plain_views(context))) for p in self.cohort.patches])
        return self._lbp

    def train_config(self, method: str) -> TrainConfig:
        head, clinical = head_of(method)
        return replace(self.config.train, head=head, clinical=clinical, seed=self.seed)

    def batched(self, method: str) -> bool:
        """True when the method's folds train together as one stacked computation."""
        return head_of(method) is not None and self.config.train.mode == "frozen"

    def run(self, method: str, folds: list[Fold]) -> list[dict]:
        """One record per fold, each with its wall time (for batched folds: their share of the batch's). With a
        decision rule to fit (CVConfig.rule), each fold's rule is fitted on inner out-of-fold scores of its own
        training subjects and applied to its test subjects."""
        start = time.perf_counter()
        results = self._fit_predict(method, [(fold.train, fold.test) for fold in folds])
        records = [_record(method, fold, *result) for fold, result in zip(folds, results, strict=True)]
        if not self.config.rule.fixed:
            labels = self.cohort.labels
            inner = self.inner_scores(method, [fold.train for fold in folds])
            for record, fold, scores in zip(records, folds, inner, strict=True):
                _apply_rule(record, fit_rule(labels[fold.train], scores, self.config.rule))
        for record in records:
            record["seed"] = self.seed
            record["wall_s"] = round((time.perf_counter() - start) / len(folds), 3)
            record["batched_with"] = len(folds)
        return records

    def inner_scores(self, method: str, train_sets: list[np.ndarray]) -> list[np.ndarray]:
        """Per training set, every member's inner out-of-fold score (in the set's order): the set is split into
        stratified inner folds (operating_point.inner_splits) and each part is scored by a model trained on the
        rest of the set. Frozen heads of all inner folds of all sets train as one stacked computation."""
        labels = self.cohort.labels
        plans = []  # (set number, positions in the set scored, training subjects, scored subjects)
        for number, train in enumerate(train_sets):
            train = np.asarray(train)
            for inner_train, inner_test in inner_splits(labels[train], self.config.rule, self.seed):
                plans.append((number, inner_test, train[inner_train], train[inner_test]))
        results = self._fit_predict(method, [(train, test) for _, _, train, test in plans])
        scores = [np.zeros(len(train)) for train in train_sets]
        for (number, positions, _, _), (probability, _, _) in zip(plans, results, strict=True):
            scores[number][positions] = probability
        return scores

    def leave_pair_out(self, method: str) -> dict:
        """Leave-pair-out AUROC (Airola et al., Computational Statistics & Data Analysis 2011): for every
        (osteoporosis, normal) pair, a model trained on all other subjects scores both; the AUROC is the fraction
        of pairs ordered right (ties 1/2). Unlike pooled leave-one-out scores, both members of a pair are scored by
        the same model, so the shift of the training prevalence between folds cannot order them."""
        labels = self.cohort.labels
        everyone = np.arange(len(labels))
        pairs = [(i, j) for i in np.flatnonzero(labels == 1) for j in np.flatnonzero(labels == 0)]
        start = time.perf_counter()
        results = self._fit_predict(method, [(np.setdiff1d(everyone, pair), np.array(pair)) for pair in pairs])
        wins = [float(p[0] > p[1]) + 0.5 * float(p[0] == p[1]) for p, _, _ in results]
        return {"auroc": float(np.mean(wins)), "pairs": len(pairs), "wall_s": round(time.perf_counter() - start, 1)}

    def _clinical(self, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        """The clinical baseline's p for the test subjects: logistic regression on age and sex, fitted on the
        training subjects that have both; a test subject without them gets the training prevalence (it knows
        nothing of that subject), and so does everyone when the usable training subjects lack a class."""
        if self._covariates is None:  # once per runner, as the LBP features
            self._covariates = self.cohort.covariates
            check_covariates(self._covariates)
        labels, covariates = self.cohort.labels, self._covariates
        usable = ~np.isnan(covariates).any(axis=1)
        fit_rows = train[usable[train]]
        probability = np.full(len(test), labels[train].mean())
        if len(np.unique(labels[fit_rows])) == 2:
            model = build_baseline(CLINICAL, self.seed).fit(covariates[fit_rows], labels[fit_rows])
            scored = usable[test]
            probability[scored] = model.predict_proba(covariates[test[scored]])[:, 1]
        return probability

    def _fit_predict(self, method: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple]:
        """For each (training subjects, test subjects): a fresh model trained on the first scores the second:
        (p [m], attention [m, 4] or None, training curve or None)."""
        if self.batched(method):
            models = fit_frozen_folds(self.cohort, [train for train, _ in pairs], self.train_config(method))
            return [(*predict_proba(model, self.cohort, test), None)
                    for (_, test), model in zip(pairs, models, strict=True)]
        return [self._fit_predict_one(method, train, test) for train, test in pairs]

    def _fit_predict_one(self, method: str, train: np.ndarray, test: np.ndarray) -> tuple:
        labels = self.cohort.labels
        if method == CLINICAL:
            return self._clinical(train, test), None, None
        if method in BASELINES:
            features = np.zeros((len(labels), 1)) if method == "majority" else self.lbp()
            model = build_baseline(method, self.seed, len(train))
            model.fit(features[train], labels[train])
            return model.predict_proba(features[test])[:, 1], None, None
        model = fit(self.cohort, train, self.train_config(method))
        return (*predict_proba(model, self.cohort, test), model.history)


def check_covariates(covariates: np.ndarray) -> None:
    """Refuse the clinical method when no subject has both age and sex."""
    if np.isnan(covariates).any(axis=1).all():
        raise InputError("method clinical needs the age and sex columns of subjects.csv, filled for at least some "
                         "subjects")


def _record(method: str, fold: Fold, probability: np.ndarray, attention: np.ndarray | None,
            history: dict | None) -> dict:
    record = {"method": method, "fold": fold.name, "test": fold.test.tolist(), "p": probability.tolist(),
              "attention": None if attention is None else attention.tolist()}
    if history is not None:
        record["history"] = history  # per-epoch training curve of a fine-tuned fold
    return record


def _apply_rule(record: dict, rule: FittedRule) -> None:
    """The fold's fitted decision rule on its record: p becomes the calibrated probability (p_raw keeps the
    model's), threshold the fold's threshold."""
    record["p_raw"] = record["p"]
    record["p"] = rule.probability(np.array(record["p"])).tolist()
    record["threshold"] = rule.threshold
    record["calibration"] = rule.calibration


def run_job(shared: tuple[Cohort, CVConfig], job: Job) -> list[dict]:
    """A job's fold records, computed from scratch (a Ray task: one per job)."""
    cohort, config = shared
    return FoldRunner(cohort, config, job.seed).run(job.method, list(job.folds))


_worker_state: dict = {}


def _start_worker(cohort: Cohort, config: CVConfig, threads: int) -> None:
    torch.set_num_threads(threads)
    _worker_state.update(cohort=cohort, config=config, runners={})


def _runner(runners: dict[int, FoldRunner], cohort: Cohort, config: CVConfig, seed: int) -> FoldRunner:
    if seed not in runners:
        runners[seed] = FoldRunner(cohort, config, seed)
    return runners[seed]


def _run_in_worker(job: Job) -> list[dict]:
    runner = _runner(_worker_state["runners"], _worker_state["cohort"], _worker_state["config"], job.seed)
    return runner.run(job.method, list(job.folds))


class LocalBackend:
    """This machine: jobs in this process (sharing LBP and frozen features), fine-tune folds in `workers` spawned
    processes when workers > 1 (results do not depend on it)."""

    whole_methods = False  # cheap methods run fold by fold (a fold file each as it finishes)

    def __init__(self, workers: int = 1):
        self.workers = workers

    def session(self):
        return contextlib.nullcontext()

    def parallelism(self) -> int:
        return self.workers

    def task_threads(self) -> int:
        """Intra-op threads a fine-tune fold gets."""
        return max(1, (os.cpu_count() or 1) // self.workers) if self.workers > 1 else torch.get_num_threads()

    def execute(self, cohort: Cohort, config: CVConfig, jobs: list[Job], progress: Callable):
        """Yield each job's records as it finishes."""
        def in_workers(job: Job) -> bool:
            return self.workers > 1 and head_of(job.method) is not None and config.train.mode == "finetune"

        runners: dict[int, FoldRunner] = {}  # per seed: LBP features computed once
        for job in progress([job for job in jobs if not in_workers(job)]):
            yield _runner(runners, cohort, config, job.seed).run(job.method, list(job.folds))
        parallel = [job for job in jobs if in_workers(job)]
        if parallel:
            threads = self.task_threads()
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(self.workers, context, _start_worker, (cohort, config, threads)) as pool:
                futures = [pool.submit(_run_in_worker, job) for job in parallel]
                for future in progress(as_completed(futures)):
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

    def task_threads(self) -> int:
        return max(1, int(self.resources.cpus))  # Ray sets a task's OMP_NUM_THREADS to its CPUs

    def execute(self, cohort: Cohort, config: CVConfig, jobs: list[Job], progress: Callable):
        for _, records in progress(ray_map(self.task, (cohort, config), jobs, self.resources)):
            yield records


FOLDS_PER_GPU = 8  # fine-tune folds training at once on one CUDA device (see docs/performance.md)


def default_workers(mode: str, device: str = "cpu") -> int:
    """Worker processes for fine-tune folds. On the CPU one per 4 cores (a fold's convolutions use 4 threads
    well). On a GPU, FOLDS_PER_GPU processes share the device, each training its own folds exactly as alone: one
    fold's batch of 256 patches leaves a large GPU mostly idle, waiting for the host between kernels, and the
    processes fill those gaps with each other's work."""
    if mode != "finetune":
        return 1
    if device.startswith("cuda"):
        return max(1, min(FOLDS_PER_GPU, os.cpu_count() or 1))
    return max(1, (os.cpu_count() or 1) // 4)


def project_seconds(cohort: Cohort, config: CVConfig, jobs: list[Job], parallelism: int, threads: int) -> float:
    """Projected wall time of the pending fine-tune fits: one training step timed on this machine with the
    threads a fold gets x steps / folds at a time."""
    fits = [(job.method, fold) for job in jobs if head_of(job.method) is not None for fold in job.folds]
    if not fits:
        return 0.0
    with intra_op_threads(threads):
        head, clinical = head_of(fits[0][0])
        step = time_finetune_step(cohort, replace(config.train, head=head, clinical=clinical))
    steps = sum(finetune_steps(len(fold.train), config.train) for _, fold in fits)
    return step * steps / parallelism


def run_folds(cohort: Cohort, subject_ids: list[str], config: CVConfig, run_dir: Path,
              progress: Callable = iter, backend: LocalBackend | RayBackend | None = None,
              log: Callable[[str], None] = lambda _: None) -> dict[int, dict[str, list[dict]]]:
    """Run (or resume) every method on every fold of every seed; returns {seed: {method: [fold records]}} in
    fold order.

    Finished folds are read back from RUN/folds; the rest run on `backend` (default: this process), each
    record written as it arrives; before fine-tuning starts, the projected time is logged.
    """
    backend = backend or LocalBackend()
    done: dict[tuple[int, str, str], dict] = {}
    jobs: list[Job] = []
    folds_of: dict[int, list[Fold]] = {}
    for seed in config.seeds:
        folds = folds_of[seed] = make_folds(cohort.labels, config, seed)
        check_no_leakage(folds, subject_ids)
        for method in config.methods:
            pending = []
            for fold in folds:
                path = _fold_path(run_dir, seed, method, fold.name)
                if path.exists():
                    done[seed, method, fold.name] = json.loads(path.read_text())
                else:
                    pending.append(fold)
            batched = head_of(method) is not None and config.train.mode == "frozen"
            chunk = FOLD_CHUNK if batched else (len(pending) or 1) if (
                backend.whole_methods and head_of(method) is None) else 1
            jobs += [Job(seed, method, tuple(pending[i:i + chunk])) for i in range(0, len(pending), chunk)]
    with backend.session():
        if config.train.mode == "finetune":
            slots = backend.parallelism()
            seconds = project_seconds(cohort, config, jobs, slots, backend.task_threads())
            if seconds:
                log(f"fine-tune: projected {_duration(seconds)} of training steps for the pending folds ({slots} at "
                    "a time, timed on this machine; worker start-up not included); --epochs and --native-res "
                    "shorten it")
        for records in backend.execute(cohort, config, jobs, progress):
            for record in records:
                _write_json(_fold_path(run_dir, record["seed"], record["method"], record["fold"]), record)
                done[record["seed"], record["method"], record["fold"]] = record
    return {seed: {method: [done[seed, method, fold.name] for fold in folds_of[seed]] for method in config.methods}
            for seed in config.seeds}


def _fold_path(run_dir: Path, seed: int, method: str, fold_name: str) -> Path:
    return run_dir / "folds" / f"seed-{seed}" / method / f"{fold_name}.json"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def summarise(records: dict[str, list[dict]], labels: np.ndarray) -> tuple[dict, dict]:
    """Per method: out-of-fold probability and attention per subject (mean over repeats) and metrics (the
    screening metrics at p = 0.5, PPV and NPV included; under "calibration" those of
    calibration.calibration_metrics; for repeated k-fold under "auroc_repeats" the per-repeat AUROC with its
    bootstrap interval, metrics.repeat_auroc)."""
    per_subject, metrics = {}, {}
    for method, folds in records.items():
        total, count = np.zeros(len(labels)), np.zeros(len(labels))
        attention_total = np.zeros((len(labels), 4))
        has_attention = all(r["attention"] is not None for r in folds)
        for record in folds:
            total[record["test"]] += record["p"]
            count[record["test"]] += 1
            if has_attention:
                attention_total[record["test"]] += np.array(record["attention"])
        probability = total / np.maximum(count, 1)
        attention = attention_total / np.maximum(count, 1)[:, None] if has_attention else None
        per_subject[method] = {"p": probability, "attention": attention}
        metrics[method] = {**screening_metrics(labels, probability),
                           "calibration": calibration_metrics(labels, probability)}
        if all("threshold" in r for r in folds):
            metrics[method].update(_rule_metrics(folds, labels))
        by_repeat = _scores_by_repeat(folds, len(labels))
        if by_repeat is not None and len(np.unique(labels)) == 2:
            metrics[method]["auroc_repeats"] = repeat_auroc(labels, by_repeat)
    return per_subject, metrics


def _per_repeat(folds: list[dict], count: int, value: Callable[[dict], np.ndarray]) -> dict[str, np.ndarray]:
    """{repeat ("r03"; leave-one-out has one, "loo"): [count] float values of its test subjects, from
    value(record) per fold record; NaN where the repeat scored no one}."""
    repeats: dict[str, np.ndarray] = {}
    for record in folds:
        name = record["fold"].split("-")[0] if record["fold"].startswith("r") else "loo"
        repeats.setdefault(name, np.full(count, np.nan))[record["test"]] = value(record)
    return dict(sorted(repeats.items()))


def _rule_metrics(folds: list[dict], labels: np.ndarray) -> dict:
    """Metrics of records that carry a fitted decision rule: at each fold's own threshold, per repeat (each
    repeat flags every subject once; the first repeat's counts and Wilson intervals are the headline, every
    repeat's OPA and NOPA are listed), the calibration of the uncalibrated scores, and the spread of the folds'
    thresholds. Averaging flags or margins over repeats instead would not be one screening decision per subject."""
    flags = _per_repeat(folds, len(labels), lambda r: np.array(r["p"]) >= r["threshold"])
    per_repeat = {name: decision_metrics(labels, flag.astype(int)) for name, flag in flags.items()
                  if not np.isnan(flag).any()}
    raw = np.nanmean(np.stack(list(_per_repeat(folds, len(labels), lambda r: r["p_raw"]).values())), axis=0)
    thresholds = np.array([r["threshold"] for r in folds])
    return {"at_rule_threshold": {**next(iter(per_repeat.values())),
                                  "threshold": {"median": float(np.median(thresholds)),
                                                "min": float(thresholds.min()), "max": float(thresholds.max())},
                                  "repeats": {name: {"OPA": m["OPA"], "NOPA": m["NOPA"]}
                                              for name, m in per_repeat.items()}},
            "calibration_uncalibrated": calibration_metrics(labels, raw)}


def _scores_by_repeat(folds: list[dict], count: int) -> np.ndarray | None:
    """[R, n] out-of-fold scores per repeat of a repeated k-fold run (fold names rRR-fFF); None for leave-one-out
    or when a repeat does not score every subject."""
    if not folds or not all(r["fold"].startswith("r") for r in folds):
        return None
    scores = np.stack(list(_per_repeat(folds, count, lambda r: r["p"]).values()))
    return None if np.isnan(scores).any() else scores


def training_curves(records: dict[int, dict[str, list[dict]]]) -> dict[str, dict]:
    """Per fine-tuned method, its folds' per-epoch training curves (over every fold of every seed): for "loss"
    and "accuracy", {"mean", "sd", "min", "max"}: lists of one value per epoch, and "folds": how many folds."""
    curves = {}
    methods = {method for by_method in records.values() for method in by_method}
    for method in sorted(methods):
        histories = [r["history"] for by_method in records.values() for r in by_method.get(method, [])
                     if r.get("history")]
        if not histories:
            continue
        curve = {"folds": len(histories)}
        for key in ("loss", "accuracy"):
            values = np.array([h[key] for h in histories], dtype=np.float64)  # [folds, epochs]
            curve[key] = {"mean": values.mean(axis=0).round(6).tolist(), "sd": values.std(axis=0).round(6).tolist(),
                          "min": values.min(axis=0).round(6).tolist(), "max": values.max(axis=0).round(6).tolist()}
        curves[method] = curve
    return curves


def comparisons(per_subject: dict, labels: np.ndarray) -> list[dict]:
    """Every method against the paper's group-attention model on the same subjects: the exact McNemar test of
    their decisions at 0.5 and (under "delong") DeLong's test of their pooled out-of-fold AUROCs."""
    if REFERENCE_METHOD not in per_subject:
        return []
    reference = per_subject[REFERENCE_METHOD]["p"]
    both_classes = len(np.unique(labels)) == 2
    return [{"method": method, "reference": REFERENCE_METHOD,
             **mcnemar_exact((reference >= 0.5) == labels, (result["p"] >= 0.5) == labels),
             "delong": delong_test(labels, result["p"], reference) if both_classes else None}
            for method, result in per_subject.items() if method != REFERENCE_METHOD]
