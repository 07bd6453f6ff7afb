"""The folds of a cross-validation and the guard against leakage between their two sides.

Leave-one-out (the paper), or repeated stratified k-fold split by a seed; fold names are stable file names
("loo-0007", "r03-f01"). `check_no_leakage` refuses any fold with a subject id on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteoscreen.core.errors import InputError

PROTOCOLS = ("loo", "kfold")


class LeakageError(RuntimeError):
    """A subject appears on both the training and the test side of a fold (a bug, never a user error)."""


@dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray
    test: np.ndarray


def make_folds(labels: np.ndarray, config, seed: int = 0) -> list[Fold]:
    """Leave-one-out, or repeated stratified k-fold (split by `seed`), as config (a CVConfig: protocol, folds,
    repeats) says; fold names are stable file names."""
    from sklearn.model_selection import LeaveOneOut, RepeatedStratifiedKFold  # not at import: see baselines

    indices = np.arange(len(labels))
    if config.protocol == "loo":
        splitter = LeaveOneOut().split(indices)
        return [Fold(f"loo-{test[0]:04d}", train, test) for train, test in splitter]
    if np.bincount(labels, minlength=2).min() < config.folds:
        raise InputError(f"folds={config.folds} exceeds the size of the smaller class "
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
