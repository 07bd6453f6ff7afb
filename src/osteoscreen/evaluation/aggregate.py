"""From fold records to results: per-subject out-of-fold scores, metrics per method (at 0.5 and at fitted
decision rules, calibration, per-repeat AUROC), training curves of fine-tuned methods, and the comparisons of
every method with the reference (McNemar, DeLong)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from osteoscreen.core.landmarks import flagged
from osteoscreen.evaluation.calibration import calibration_metrics
from osteoscreen.evaluation.metrics import (
    decision_metrics,
    delong_test,
    mcnemar_exact,
    repeat_auroc,
    screening_metrics,
)

REFERENCE_METHOD = "group-attention"  # the paper's model: every other method is compared with it


def summarise(records: dict[str, list[dict]], labels: np.ndarray) -> tuple[dict, dict]:
    """Per method: out-of-fold probability and attention per subject (mean over repeats) and metrics (the
    screening metrics at THRESHOLD, PPV and NPV included; under "calibration" those of
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
             **mcnemar_exact(flagged(reference) == labels, flagged(result["p"]) == labels),
             "delong": delong_test(labels, result["p"], reference) if both_classes else None}
            for method, result in per_subject.items() if method != REFERENCE_METHOD]
