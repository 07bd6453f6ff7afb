"""Cross-validation in memory: every method on the same folds of every seed, then their metrics.

`cross_validate(cohort, config)` returns a `CVResult`: the fold records, per-subject out-of-fold probabilities and
attention, metrics per method and seed, comparisons with the reference method, training curves and decision
curves. A `store` keeps finished folds (and leave-pair-out results) so that a rerun resumes: in memory by default;
the RUN folder of `osteoscreen cv` (reporting.runs) is one on disk. Jobs run on a backend (evaluation.execution).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from osteoscreen.core.arguments import check_type
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import CLASSES
from osteoscreen.core.utils import intra_op_threads
from osteoscreen.data.cohort import Cohort
from osteoscreen.evaluation.aggregate import comparisons, summarise, training_curves
from osteoscreen.evaluation.crossval import CVConfig, FoldRunner, Job, batched, check_covariates
from osteoscreen.evaluation.decision_curve import net_benefit
from osteoscreen.evaluation.execution import LocalBackend, RayBackend
from osteoscreen.evaluation.metrics import seed_spread
from osteoscreen.evaluation.splits import Fold, check_no_leakage, make_folds
from osteoscreen.evaluation.tables import format_spread, format_table
from osteoscreen.features.frozen import frozen_features
from osteoscreen.features.lbp import lbp_features
from osteoscreen.methods.baselines import CLINICAL
from osteoscreen.models.heads import head_of
from osteoscreen.training.finetune import finetune_steps, time_finetune_step
from osteoscreen.training.fitted import clinical_covariates
from osteoscreen.training.stacked import FOLD_CHUNK


class FoldStore(Protocol):
    """Where finished fold records and leave-pair-out results are kept between runs."""

    def fold(self, seed: int, method: str, fold: Fold) -> dict | None: ...
    def save_fold(self, record: dict) -> None: ...
    def lpo(self, seed: int, method: str) -> dict | None: ...
    def save_lpo(self, seed: int, method: str, result: dict) -> None: ...


class MemoryStore:
    """A FoldStore in memory: pass the same one to a second `cross_validate` to resume it."""

    def __init__(self):
        self.folds: dict[tuple[int, str, str], dict] = {}
        self.lpos: dict[tuple[int, str], dict] = {}

    def fold(self, seed: int, method: str, fold: Fold) -> dict | None:
        return self.folds.get((seed, method, fold.name))

    def save_fold(self, record: dict) -> None:
        self.folds[record["seed"], record["method"], record["fold"]] = record

    def lpo(self, seed: int, method: str) -> dict | None:
        return self.lpos.get((seed, method))

    def save_lpo(self, seed: int, method: str, result: dict) -> None:
        self.lpos[seed, method] = result


@dataclass
class CVResult:
    """What a cross-validation found.

    records: {seed: {method: [fold records]}} in fold order (a record: method, fold, test positions, p, attention,
    seed, wall time; with a fitted rule p_raw, threshold and calibration; fine-tuned: history). per_subject: the
    first seed's {method: {"p": [n] out-of-fold p(osteoporosis), "attention": [n, 4] or None}} (mean over
    repeats). metrics: the first seed's per method (evaluation.aggregate.summarise); seed_metrics: every seed's;
    spread: mean, sd, min and max across seeds; comparisons: each method against group-attention (McNemar, DeLong);
    training_curves: per fine-tuned method; decision_curves: net benefit per method at config.prevalence.
    """

    config: CVConfig
    subject_ids: list[str]
    labels: np.ndarray
    records: dict[int, dict[str, list[dict]]]
    per_subject: dict[str, dict]
    metrics: dict[str, dict]
    seed_metrics: dict[int, dict[str, dict]]
    spread: dict
    comparisons: list[dict]
    training_curves: dict[str, dict]
    decision_curves: dict[str, dict]

    def probabilities(self, method: str) -> np.ndarray:
        """[n] out-of-fold p(osteoporosis) of a method per subject (first seed, mean over repeats)."""
        return self.per_subject[method]["p"]

    def table(self) -> str:
        """The Table-1-style comparison `osteoscreen cv` prints (and, with several seeds, their spread)."""
        table = format_table(self.metrics, self.comparisons)
        if len(self.config.seeds) > 1:
            table = f"seed {self.config.seeds[0]}:\n{table}\n\n{format_spread(self.spread)}"
        return table


def cross_validate(cohort: Cohort, config: CVConfig | None = None, backend: LocalBackend | RayBackend | None = None,
                   store: FoldStore | None = None, progress: Callable[[str], Callable] = lambda _: iter,
                   log: Callable[[str], None] = lambda _: None) -> CVResult:
    """Run (or, with a store that holds finished folds, resume) every method of config on every fold of every
    seed; backend: where folds run (default: this process; results do not depend on it); log: progress messages."""
    check_type(cohort, Cohort, "cohort", "osteoscreen.load_dataset(DATA)")
    check_type(config, (CVConfig, type(None)), "config", "a CVConfig, or None for the defaults")
    config = config or CVConfig()
    if cohort.root is not cohort:
        cohort = cohort.detached()
    check_cohort(cohort, config)
    store = store if store is not None else MemoryStore()
    labels, subject_ids, covariates = cohort.labels, cohort.subject_ids, cohort.covariates
    missing_covariates = int(np.isnan(covariates).any(axis=1).sum())
    if CLINICAL in config.methods and missing_covariates:
        log(f"clinical: {missing_covariates} subject(s) lack age or sex; the clinical method scores them at "
            "the training prevalence")
    # shared inputs, computed once before any fold (Ray tasks receive them; local jobs then run side by side)
    if any(method.endswith("-lbp") for method in config.methods):
        lbp_features(cohort, progress=progress("LBP"))
    if config.train.mode == "frozen" and any(head_of(m) is not None for m in config.methods):
        for seed in config.seeds:  # once per seed, for every head and fold
            frozen_features(cohort, replace(config.train, seed=seed), progress=progress("features"))
    records = run_folds(cohort, config, store, progress=progress("folds"), backend=backend, log=log)
    summaries = {seed: summarise(by_method, labels) for seed, by_method in records.items()}
    if CLINICAL in config.methods:
        for _, seed_metrics in summaries.values():
            seed_metrics[CLINICAL]["without_covariates"] = missing_covariates
    if config.leave_pair_out:
        for seed, (_, seed_metrics) in summaries.items():
            for method in config.methods:
                seed_metrics[method]["auroc_lpo"] = _leave_pair_out(cohort, config, seed, method, store, log)
    per_subject, metrics = summaries[config.seeds[0]]
    decisions = {method: net_benefit(labels, result["p"], prevalence=config.prevalence)
                 for method, result in per_subject.items()}
    return CVResult(config, subject_ids, labels, records, per_subject, metrics,
                    {seed: summary[1] for seed, summary in summaries.items()},
                    seed_spread([summaries[seed][1] for seed in config.seeds]), comparisons(per_subject, labels),
                    training_curves(records), decisions)


def check_cohort(cohort: Cohort, config: CVConfig) -> None:
    """Everything about the cohort that would refuse the cross-validation, checked before any work or any file:
    both classes of the task present (at least 2 subjects each), the folds makeable for every seed, and the
    covariates that clinical methods need."""
    counts = np.bincount(np.asarray(cohort.labels, dtype=int), minlength=2) if len(cohort) else np.zeros(2, int)
    if counts.min() < 2:
        info = cohort.info or {}
        excluded = ", ".join(f"{n} {name}" for name, n in (info.get("excluded") or {}).items() if n)
        raise InputError(f"task {info.get('task', config.task)} kept {len(cohort)} of {info.get('listed', len(cohort))}"
                         f" subject(s): {counts[1]} {CLASSES[1]} (positive), {counts[0]} negative"
                         f"{'; excluded by the task: ' + excluded if excluded else ''}. Cross-validation needs at least"
                         " 2 subjects of each class: choose another task= or add subjects")
    for seed in config.seeds:
        make_folds(cohort.labels, config, seed)
    if CLINICAL in config.methods:
        check_covariates(cohort.covariates)
    if any(head_of(m) is not None and head_of(m)[1] for m in config.methods):
        clinical_covariates(cohort, range(len(cohort)))  # every subject needs age and sex


def _leave_pair_out(cohort: Cohort, config: CVConfig, seed: int, method: str, store: FoldStore,
                    log: Callable[[str], None]) -> dict:
    """The method's leave-pair-out AUROC, computed once and kept in the store."""
    result = store.lpo(seed, method)
    if result is None:
        log(f"leave-pair-out AUROC of {method} (seed {seed}): one fit per positive-negative pair")
        result = FoldRunner(cohort, config, seed).leave_pair_out(method)
        store.save_lpo(seed, method, result)
    return result


def run_folds(cohort: Cohort, config: CVConfig, store: FoldStore, progress: Callable = iter,
              backend: LocalBackend | RayBackend | None = None, log: Callable[[str], None] = lambda _: None
              ) -> dict[int, dict[str, list[dict]]]:
    """Every method on every fold of every seed; returns {seed: {method: [fold records]}} in fold order.

    Finished folds come from the store; the rest run on `backend` (default: this process), each record saved as
    it arrives; before fine-tuning starts, the projected time is logged.
    """
    backend = backend or LocalBackend()
    done: dict[tuple[int, str, str], dict] = {}
    jobs: list[Job] = []
    folds_of: dict[int, list[Fold]] = {}
    for seed in config.seeds:
        folds = folds_of[seed] = make_folds(cohort.labels, config, seed)
        check_no_leakage(folds, cohort.subject_ids)
        for method in config.methods:
            pending = []
            for fold in folds:
                record = store.fold(seed, method, fold)
                if record is not None:
                    done[seed, method, fold.name] = record
                else:
                    pending.append(fold)
            chunk = FOLD_CHUNK if batched(method, config) else (len(pending) or 1) if (
                backend.whole_methods and head_of(method) is None) else 1
            jobs += [Job(seed, method, tuple(pending[i:i + chunk])) for i in range(0, len(pending), chunk)]
    with backend.session():
        if config.train.mode == "finetune":
            slots = backend.parallelism()
            seconds = project_seconds(cohort, config, jobs, slots)
            if seconds:
                log(f"fine-tune: projected {_duration(seconds)} of training steps for the pending folds ({slots} at "
                    "a time, timed on this machine; worker start-up not included); --epochs and --native-res "
                    "shorten it")
        for records in backend.execute(cohort, config, jobs, progress):
            for record in records:
                store.save_fold(record)
                done[record["seed"], record["method"], record["fold"]] = record
    return {seed: {method: [done[seed, method, fold.name] for fold in folds_of[seed]] for method in config.methods}
            for seed in config.seeds}


def project_seconds(cohort: Cohort, config: CVConfig, jobs: list[Job], parallelism: int) -> float:
    """Projected wall time of the pending fine-tune fits: one training step timed on this machine with the
    threads a fold gets (config.train.threads) x steps / folds at a time."""
    fits = [(job.method, fold) for job in jobs if head_of(job.method) is not None for fold in job.folds]
    if not fits:
        return 0.0
    with intra_op_threads(config.train.threads):
        head, clinical = head_of(fits[0][0])
        step = time_finetune_step(cohort, replace(config.train, head=head, clinical=clinical))
    steps = sum(finetune_steps(len(fold.train), config.train) for _, fold in fits)
    return step * steps / parallelism


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"
