"""Cross-validation's unit of work: its configuration, and `FoldRunner`, which runs a method on folds.

Every method is an estimator (osteoscreen.methods.estimators) fitted on a fold's training subjects and scoring its test
subjects; the one fast path is frozen mode, where the heads of many folds train as one stacked computation
(training.stacked). With a decision rule to fit, each fold's rule is fitted on inner out-of-fold scores of its own
training subjects. Work is cut into jobs (one seed, one method, some folds) that a backend runs
(evaluation.execution); `experiment.cross_validate` schedules them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from osteoscreen.core.arguments import check_fields, check_range
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import DEFAULT_TASK, check_task
from osteoscreen.data.cohort import Cohort
from osteoscreen.evaluation.operating_point import DecisionRule, FittedRule, fit_rule, inner_splits
from osteoscreen.evaluation.splits import PROTOCOLS, Fold
from osteoscreen.methods.baselines import BASELINES, CLINICAL
from osteoscreen.methods.estimators import make_estimator
from osteoscreen.models.heads import CLINICAL_HEADS, HEADS, head_of
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fit import predict_proba
from osteoscreen.training.stacked import fit_frozen_folds

DEFAULT_METHODS: tuple[str, ...] = (*BASELINES, *HEADS)  # the image methods and their baselines
#: also, when asked for: clinical (age and sex only) and every head + clinical
METHODS: tuple[str, ...] = DEFAULT_METHODS + (CLINICAL,) + CLINICAL_HEADS


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
    task: str = DEFAULT_TASK  # the binary question (landmarks.TASKS): WHO classes positive, negative, excluded
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check_fields(self)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(METHODS)}")
        if self.protocol not in PROTOCOLS:
            raise InputError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        check_range(self.folds >= 2, "folds", "an integer >= 2", self.folds)
        check_range(self.repeats >= 1, "repeats", "an integer >= 1", self.repeats)
        check_task(self.task)
        if self.leave_pair_out and (self.protocol != "loo" or self.train.mode != "frozen"):
            raise InputError("leave_pair_out: is for protocol='loo' with mode='frozen' (it fits one model per "
                             "positive-negative pair: about 1,000 for 70 subjects)")
        check_range(self.prevalence is None or 0 < self.prevalence < 1, "prevalence",
                    "None or a number strictly between 0 and 1", self.prevalence)
        check_range(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds) and min(self.seeds) >= 0, "seeds",
                    "distinct seeds >= 0", self.seeds)


def batched(method: str, config: CVConfig) -> bool:
    """True when the method's folds train together as one stacked computation (frozen-mode CNN heads)."""
    return head_of(method) is not None and config.train.mode == "frozen"


@dataclass(frozen=True)
class Job:
    """One unit of work: a method on some folds of one seed."""

    seed: int
    method: str
    folds: tuple[Fold, ...]


class FoldRunner:
    """Runs methods on folds of one seed; features are memoised in the cohort, so folds and methods share them.

    Frozen-mode CNN heads of many folds train together (`fit_frozen_folds`); every other method runs fold by fold
    as its estimator (`make_estimator`).
    """

    def __init__(self, cohort: Cohort, config: CVConfig, seed: int):
        self.cohort, self.config, self.seed = cohort, config, seed

    def train_config(self, method: str) -> TrainConfig:
        head, clinical = head_of(method)
        return replace(self.config.train, head=head, clinical=clinical, seed=self.seed)

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

    def _fit_predict(self, method: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple]:
        """For each (training subjects, test subjects): a fresh model trained on the first scores the second:
        (p [m], attention [m, 4] or None, training curve or None)."""
        if batched(method, self.config):
            models = fit_frozen_folds(self.cohort, [train for train, _ in pairs], self.train_config(method))
            return [(*predict_proba(model, self.cohort, test), None)
                    for (_, test), model in zip(pairs, models, strict=True)]
        return [self._fit_predict_one(method, train, test) for train, test in pairs]

    def _fit_predict_one(self, method: str, train: np.ndarray, test: np.ndarray) -> tuple:
        estimator = make_estimator(method, replace(self.config.train, seed=self.seed))
        estimator.fit(self.cohort[train])
        return (*estimator.scores(self.cohort[test]), getattr(estimator, "history_", None))


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
