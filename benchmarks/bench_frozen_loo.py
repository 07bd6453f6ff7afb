"""Frozen-mode leave-one-out over the 70-subject default cohort, end to end, against the naive way.

ours: read and validate the dataset, decode the radiographs and cut the patches, extract the backbone features
of every subject's views once (fp32, the default), then train the heads of all 70 folds of every CNN method
(concat, group-attention, abmil, gated-abmil) as stacked computations (osteoscreen.evaluation.crossval.run_folds
into a fresh run folder, as `osteoscreen cv --methods ...` does).
naive: the same, but backbone features recomputed in every fold and each fold's heads trained on their own
(`fit` one fold at a time). One naive fold is timed (median of the repetitions) and multiplied by the 70 folds:
running it 70 times would take half an hour and tell nothing more.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import REPEATS, Row, default_cohort, median_seconds
from osteoscreen.data.cohort import Cohort
from osteoscreen.data.subject_patches import load_dataset_with_patches
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.evaluation.experiment import run_folds
from osteoscreen.evaluation.splits import make_folds
from osteoscreen.features.frozen import forget_frozen_features
from osteoscreen.models.heads import HEADS
from osteoscreen.reporting.runs import RunFolder
from osteoscreen.training.fit import fit, predict_proba

TARGET_RATIO = 15.0  # against the naive way, on any machine (the seconds depend on it)


def load(data: Path) -> Cohort:
    """As `osteoscreen cv` loads: the dataset checked, every radiograph decoded once and cut into patches."""
    _, patches = load_dataset_with_patches(data, CVConfig().train.patch)
    return Cohort(patches, CVConfig().train.patch)


def ours_once(data: Path) -> dict:
    cohort = load(data)
    with tempfile.TemporaryDirectory() as run_dir:
        return run_folds(cohort, CVConfig(methods=tuple(HEADS)), RunFolder(Path(run_dir)))[0]


def naive_fold(cohort: Cohort, fold) -> None:
    """One fold the naive way: fresh backbone features for all subjects, then each head fitted alone."""
    forget_frozen_features(cohort)  # this fold computes its own features
    for head in HEADS:
        model = fit(cohort, fold.train, replace(CVConfig().train, head=head))
        predict_proba(model, cohort, fold.test)


def run() -> list[Row]:
    data = default_cohort()
    results = []
    ours_s = median_seconds(lambda: results.append(ours_once(data)))
    cohort = load(data)
    folds = make_folds(cohort.labels, CVConfig())
    naive_fold_s = median_seconds(lambda: naive_fold(cohort, folds[0]))
    naive_s = naive_fold_s * len(folds)
    accuracy = {m: np.mean([(r["p"][0] >= 0.5) == cohort.labels[r["test"][0]] for r in records])
                for m, records in results[-1].items()}
    print("frozen LOO accuracy (OA) per head: " + ", ".join(f"{m} {a:.3f}" for m, a in accuracy.items()))
    return [Row(f"frozen LOO, 70 subjects, 4 CNN heads, end to end, fp32 (s; median of {REPEATS})", f"{ours_s:.1f}",
                f"{naive_s:.0f} (naive: 1 fold {naive_fold_s:.1f} s x {len(folds)})", f"{naive_s / ours_s:.1f}x",
                f">= {TARGET_RATIO:.0f}x", naive_s / ours_s >= TARGET_RATIO)]


if __name__ == "__main__":
    from common import format_table
    from osteoscreen.core.utils import keep_freed_memory

    keep_freed_memory()  # as the osteoscreen command does
    print(format_table(run()))
