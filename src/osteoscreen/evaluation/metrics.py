"""Screening metrics with osteoporosis as the positive class. All values are fractions in [0, 1].

OPA = TP / (TP + FN) (sensitivity), NOPA = TN / (TN + FP) (specificity), PPV = TP / (TP + FP), NPV = TN / (TN +
FN), OA = accuracy, balanced accuracy = (OPA + NOPA) / 2, AUROC on pooled out-of-fold scores (labelled as
pooled: with one subject per fold it is biased, see docs/statistics.md), Wilson 95% intervals (Brown, Cai &
DasGupta 2001) and the exact McNemar test (a two-sided binomial test on the discordant pairs).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.stats import binomtest, rankdata
from sklearn.metrics import roc_auc_score

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import THRESHOLD, flagged


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when total is 0."""
    if total == 0:
        return (math.nan, math.nan)
    interval = binomtest(int(successes), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(interval.low), float(interval.high))


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    if y_true.shape != y_pred.shape:
        raise InputError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    if not set(np.unique(np.concatenate([y_true, y_pred]))) <= {0, 1}:
        raise InputError("labels and predictions must be 0 (normal) or 1 (osteoporosis)")
    return {"tp": int(np.sum((y_true == 1) & (y_pred == 1))), "fn": int(np.sum((y_true == 1) & (y_pred == 0))),
            "tn": int(np.sum((y_true == 0) & (y_pred == 0))), "fp": int(np.sum((y_true == 0) & (y_pred == 1)))}


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def overall_accuracy(y_true: np.ndarray, scores: np.ndarray, decided: dict) -> float:
    """OA: the fraction of subjects decided right."""
    return _ratio(decided["tp"] + decided["tn"], len(y_true))


def balanced_accuracy(y_true: np.ndarray, scores: np.ndarray, decided: dict) -> float:
    """(OPA + NOPA) / 2: accuracy that the class balance does not move."""
    return (decided["OPA"] + decided["NOPA"]) / 2


def pooled_auroc(y_true: np.ndarray, scores: np.ndarray, decided: dict) -> float:
    """AUROC of the scores (NaN when only one class is present)."""
    return float(roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else math.nan


#: Metrics of a method's scores beyond the decision metrics at the threshold, by name as metrics.json and the
#: spread across seeds hold them: f(y_true [n], scores [n], decision_metrics at the threshold) -> float. A new
#: metric is one function and its line here.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray, dict], float]] = {
    "OA": overall_accuracy, "balanced_accuracy": balanced_accuracy, "auroc": pooled_auroc}


def screening_metrics(y_true: np.ndarray, p_osteoporosis: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """At the threshold: decision_metrics (OPA, NOPA, PPV, NPV, counts, Wilson intervals), then every entry of
    METRICS (OA, balanced accuracy, the pooled AUROC); OA with its Wilson interval."""
    y_true, scores = np.asarray(y_true).astype(int), np.asarray(p_osteoporosis, dtype=float)
    decided = decision_metrics(y_true, flagged(scores, threshold).astype(int))
    return {**decided, **{name: metric(y_true, scores, decided) for name, metric in METRICS.items()},
            "auroc_pooled": True, "n": len(y_true), "threshold": threshold,
            "ci95": {**decided["ci95"], "OA": wilson_interval(decided["tp"] + decided["tn"], len(y_true))}}


def decision_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """At an operating point: OPA (sensitivity), NOPA (specificity), PPV and NPV with Wilson 95 % intervals and
    the confusion counts. PPV and NPV hold at this cohort's prevalence only."""
    counts = confusion_counts(y_true, y_pred)
    tp, fn, tn, fp = counts["tp"], counts["fn"], counts["tn"], counts["fp"]
    pairs = {"OPA": (tp, tp + fn), "NOPA": (tn, tn + fp), "PPV": (tp, tp + fp), "NPV": (tn, tn + fn)}
    return {**{key: _ratio(*pair) for key, pair in pairs.items()}, **counts,
            "ci95": {key: wilson_interval(*pair) for key, pair in pairs.items()}}


def mcnemar_exact(reference_correct: np.ndarray, other_correct: np.ndarray) -> dict:
    """Exact McNemar test on paired correctness of two methods over the same subjects.

    b: reference right and other wrong; c: reference wrong and other right; p: two-sided binomial test of
    b against Binomial(b + c, 1/2) (1.0 when there are no discordant pairs).
    """
    reference_correct, other_correct = np.asarray(reference_correct, bool), np.asarray(other_correct, bool)
    if reference_correct.shape != other_correct.shape:
        raise InputError("McNemar needs both methods' results on the same subjects")
    b = int(np.sum(reference_correct & ~other_correct))
    c = int(np.sum(~reference_correct & other_correct))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p_value": p_value}


SPREAD_KEYS = ("OPA", "NOPA", *METRICS)  # the metrics whose spread across seeds is reported


def seed_spread(per_seed: list[dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Across seeds, per method and metric: mean, sample standard deviation (None for one seed), min, max.

    per_seed: one {method: screening_metrics(...)} per seed.
    """
    spread = {}
    for method in per_seed[0]:
        spread[method] = {}
        for key in SPREAD_KEYS:
            values = np.array([seed[method][key] for seed in per_seed], dtype=float)
            spread[method][key] = {"mean": float(values.mean()),
                                   "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                                   "min": float(values.min()), "max": float(values.max()), "n_seeds": len(values)}
    return spread


def _auroc_rows(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row of scores [..., n] against y_true [..., n] (Mann-Whitney from mid-ranks: ties count 1/2)."""
    ranks = rankdata(scores, axis=-1)
    positives = y_true.sum(axis=-1)
    negatives = y_true.shape[-1] - positives
    return ((ranks * y_true).sum(axis=-1) - positives * (positives + 1) / 2) / (positives * negatives)


def repeat_auroc(y_true: np.ndarray, p_by_repeat: np.ndarray, boots: int = 2000, seed: int = 0) -> dict:
    """Repeated k-fold: the AUROC of each repeat's out-of-fold scores (every subject scored once per repeat, by a
    model that never saw it), their mean, and a 95 % percentile bootstrap interval of that mean over subjects
    (resampled within each class, the same draw for every repeat; `boots` draws from `seed`).

    y_true [n] 0/1; p_by_repeat [R, n]. Unlike the pooled AUROC of leave-one-out, each repeat's scores come from
    k models of similar training sets, so the per-repeat AUROC does not carry leave-one-out's bias.
    """
    y, scores = np.asarray(y_true, int), np.asarray(p_by_repeat, float)
    per_repeat = _auroc_rows(np.broadcast_to(y, scores.shape), scores)
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws = np.concatenate([rng.choice(positives, (boots, len(positives))),
                            rng.choice(negatives, (boots, len(negatives)))], axis=1)  # [B, n] subject indices
    labels = y[draws]  # [B, n]
    resampled = scores[:, draws]  # [R, B, n]
    means = _auroc_rows(np.broadcast_to(labels, resampled.shape), resampled).mean(axis=0)  # [B]
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(per_repeat.mean()), "per_repeat": per_repeat.round(6).tolist(),
            "ci95": (float(low), float(high)), "boots": boots}


def delong_test(y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict:
    """DeLong, DeLong & Clarke-Pearson (Biometrics 1988) test of two correlated AUROCs on the same subjects, in
    the fast mid-rank form of Sun & Xu (IEEE Signal Processing Letters 2014).

    Structural components: V10[i] = fraction of negatives that positive i outranks (ties 1/2), V01[j] = fraction
    of positives that outrank negative j; AUC = mean V10 = mean V01; Cov = S10 / m + S01 / n with S10, S01 the
    sample covariances of the components over positives (m) and negatives (n). z = (AUC_a - AUC_b) / sd of the
    difference; two-sided normal p. Returns {"auroc_a", "auroc_b", "difference", "z", "p_value"} (p 1.0 when the
    difference has zero variance and is 0).
    """
    from scipy.stats import norm

    y = np.asarray(y_true, int)
    positives, negatives = y == 1, y == 0
    m, n = int(positives.sum()), int(negatives.sum())
    components10, components01 = [], []
    for scores in (np.asarray(scores_a, float), np.asarray(scores_b, float)):
        x, z = scores[positives], scores[negatives]
        ranks_all = rankdata(np.concatenate([x, z]))
        # mid-rank of each positive among all, minus its mid-rank among positives = negatives it outranks
        components10.append((ranks_all[:m] - rankdata(x)) / n)
        components01.append(1.0 - (ranks_all[m:] - rankdata(z)) / m)
    v10, v01 = np.array(components10), np.array(components01)  # [2, m], [2, n]
    auc = v10.mean(axis=1)
    covariance = np.cov(v10) / m + np.cov(v01) / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = float(auc[0] - auc[1])
    if variance <= 0:
        z_value, p_value = (0.0, 1.0) if difference == 0 else (math.copysign(math.inf, difference), 0.0)
    else:
        z_value = difference / math.sqrt(variance)
        p_value = float(2 * norm.sf(abs(z_value)))
    return {"auroc_a": float(auc[0]), "auroc_b": float(auc[1]), "difference": difference, "z": float(z_value),
            "p_value": p_value}
