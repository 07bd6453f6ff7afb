"""`osteoscreen cv`: dataset -> cohort -> resumable folds -> predictions.csv, metrics.json, report.html."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from osteoscreen.atomic import atomic_path, write_text_atomic
from osteoscreen.baselines import CLINICAL
from osteoscreen.data.subject_patches import load_dataset_with_patches, select_task
from osteoscreen.evaluation.crossval import (
    CVConfig,
    FoldRunner,
    LocalBackend,
    RayBackend,
    check_covariates,
    comparisons,
    prepare_run,
    run_folds,
    summarise,
    training_curves,
)
from osteoscreen.evaluation.decision_curve import net_benefit
from osteoscreen.evaluation.metrics import seed_spread
from osteoscreen.evaluation.report import build_report, format_spread, format_table
from osteoscreen.landmarks import CLASSES, GROUPS
from osteoscreen.models.heads import head_of
from osteoscreen.outputs import output_folder_in_place
from osteoscreen.training import Cohort, clinical_covariates

ATTENTION_COLUMNS = [f"att_{group}" for group in GROUPS]


@dataclass
class CVOutcome:
    run_dir: Path
    table: str
    metrics: dict
    padded_patches: int


def write_predictions(path: Path, records: dict[int, dict], subject_ids: list[str], labels) -> None:
    """records: {seed: {method: [fold records]}} -> one row per subject, method, fold and seed."""
    with atomic_path(path) as partial, open(partial, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["subject_id", "method", "fold", "y_true", "p_osteoporosis", "y_pred", *ATTENTION_COLUMNS,
                         "seed"])
        for seed, by_method in records.items():
            for method, folds in by_method.items():
                for record in folds:
                    attention = record["attention"] or [None] * len(record["test"])
                    threshold = record.get("threshold", 0.5)  # the fold's fitted threshold, when a rule was fitted
                    for index, probability, weights in zip(record["test"], record["p"], attention, strict=True):
                        weights_text = [""] * len(GROUPS) if weights is None else [f"{w:.6f}" for w in weights]
                        writer.writerow([subject_ids[index], method, record["fold"], CLASSES[labels[index]],
                                         f"{probability:.6f}", CLASSES[int(probability >= threshold)], *weights_text,
                                         seed])


def _leave_pair_out(cohort: Cohort, config: CVConfig, seed: int, method: str, run_dir: Path,
                    log: Callable[[str], None]) -> dict:
    """The method's leave-pair-out AUROC, computed once and kept in RUN/lpo/seed-S/METHOD.json (resumable)."""
    path = run_dir / "lpo" / f"seed-{seed}" / f"{method}.json"
    if path.exists():
        return json.loads(path.read_text())
    log(f"leave-pair-out AUROC of {method} (seed {seed}): one fit per positive-negative pair")
    result = FoldRunner(cohort, config, seed).leave_pair_out(method)
    write_text_atomic(path, json.dumps(result) + "\n")
    return result


def cross_validate(data_dir: str | Path, run_dir: str | Path, config: CVConfig,
                   progress: Callable[[str], Callable] = lambda _: iter,
                   backend: LocalBackend | RayBackend | None = None,
                   log: Callable[[str], None] = lambda _: None) -> CVOutcome:
    """Run (or resume) the whole cross-validation and write every output file of DESIGN §6.

    backend: where folds run (default: this process; results do not depend on it); log: progress messages.
    metrics.json's "methods" and "comparisons" are the first seed's; "seeds" holds every seed's metrics and
    "spread" their mean, standard deviation, min and max.
    """
    data_dir, run_dir = Path(data_dir), output_folder_in_place(run_dir)
    dataset, patches = load_dataset_with_patches(data_dir, config.train.patch, progress("patches"),
                                                 allow_shared_images=False)
    dataset, patches, dataset_info = select_task(dataset, patches, config.task)
    labels = dataset.labels
    record = prepare_run(run_dir, config, dataset_info)
    cohort = Cohort(patches, config.train.patch, dataset_info["hash"], run_dir / "cache")
    missing_covariates = int(np.isnan(cohort.covariates).any(axis=1).sum())
    if CLINICAL in config.methods:
        check_covariates(cohort.covariates)
        if missing_covariates:
            log(f"clinical: {missing_covariates} subject(s) lack age or sex; the clinical method scores them at "
                "the training prevalence")
    subject_ids = [s.subject_id for s in dataset.subjects]
    if any(head_of(m) is not None and head_of(m)[1] for m in config.methods):
        clinical_covariates(cohort, range(len(cohort)))  # every subject needs age and sex: refused before any work
    if config.train.mode == "frozen" and any(head_of(m) is not None for m in config.methods):
        for seed in config.seeds:  # once per seed, for every head and fold (Ray tasks receive them)
            cohort.frozen_features(replace(config.train, seed=seed), progress=progress("features"))
    records = run_folds(cohort, subject_ids, config, run_dir, progress=progress("folds"), backend=backend, log=log)
    summaries = {seed: summarise(by_method, labels) for seed, by_method in records.items()}
    if CLINICAL in config.methods:
        for _, seed_metrics in summaries.values():
            seed_metrics[CLINICAL]["without_covariates"] = missing_covariates
    if config.leave_pair_out:
        for seed, (_, seed_metrics) in summaries.items():
            for method in config.methods:
                seed_metrics[method]["auroc_lpo"] = _leave_pair_out(cohort, config, seed, method, run_dir, log)
    per_subject, metrics = summaries[config.seeds[0]]
    tests = comparisons(per_subject, labels)
    spread = seed_spread([summaries[seed][1] for seed in config.seeds])
    config_dict = {**asdict(config), "versions": record["versions"],
                   "rule_text": None if config.rule.fixed else config.rule.describe()}
    write_predictions(run_dir / "predictions.csv", records, subject_ids, labels)
    curves = training_curves(records)
    decisions = {method: net_benefit(labels, result["p"], prevalence=config.prevalence)
                 for method, result in per_subject.items()}
    payload = {"dataset": dataset_info, "config": asdict(config), "methods": metrics, "comparisons": tests,
               "seeds": [{"seed": seed, "methods": summaries[seed][1]} for seed in config.seeds], "spread": spread,
               "training_curves": curves, "decision_curves": decisions}
    write_text_atomic(run_dir / "metrics.json", json.dumps(payload, indent=2) + "\n")
    write_text_atomic(run_dir / "report.html", build_report(metrics, tests, per_subject, labels, subject_ids, cohort,
                                                       config_dict, dataset_info, spread, curves, decisions))
    table = format_table(metrics, tests)
    if len(config.seeds) > 1:
        table = f"seed {config.seeds[0]}:\n{table}\n\n{format_spread(spread)}"
    return CVOutcome(run_dir, table, metrics, cohort.padded_patches)
