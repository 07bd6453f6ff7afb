"""Calibration measures and decision curves against hand-computed values."""

import numpy as np
import pytest
from scipy.special import expit, logit

from osteoscreen.evaluation.calibration import (
    brier_score,
    calibration_intercept_slope,
    calibration_metrics,
    reliability_bins,
)
from osteoscreen.evaluation.decision_curve import net_benefit


def grouped_cohort(shift: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """9 groups of 10 subjects whose observed event rate is exactly k/10 (k = 1..9), each group predicted
    expit(scale * logit(k/10) - shift): the maximum-likelihood recalibration is then known exactly."""
    y, p = [], []
    for k in range(1, 10):
        y += [1] * k + [0] * (10 - k)
        p += [expit(scale * logit(k / 10) - shift)] * 10
    return np.array(y), np.array(p)


def test_brier_score_by_hand():
    assert brier_score([1, 0, 1], [0.8, 0.3, 0.5]) == pytest.approx((0.04 + 0.09 + 0.25) / 3)


def test_overconfident_scores_have_slope_one_half():
    y, p = grouped_cohort(shift=0.0, scale=2.0)  # logits twice the truth: slope 1/2, symmetric: intercept 0
    intercept, slope = calibration_intercept_slope(y, p)
    assert slope == pytest.approx(0.5, abs=1e-4) and intercept == pytest.approx(0.0, abs=1e-4)


def test_under_predicting_scores_have_a_positive_intercept():
    y, p = grouped_cohort(shift=1.0, scale=1.0)  # every logit 1 too low: intercept exactly 1, slope 1
    intercept, slope = calibration_intercept_slope(y, p)
    assert intercept == pytest.approx(1.0, abs=1e-4) and slope == pytest.approx(1.0, abs=1e-4)


def test_scores_unrelated_to_the_outcome_look_like_chance():
    rng = np.random.default_rng(0)
    y, p = rng.random(4000) < 0.7, rng.random(4000)
    metrics = calibration_metrics(y, p)
    assert abs(metrics["calibration_slope"]) < 0.1
    assert metrics["brier"] > metrics["brier_prevalence"]  # worse than always saying the prevalence


def test_reliability_bins_are_quantile_groups():
    p = np.linspace(0.05, 0.95, 10)
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1, 1])
    bins = reliability_bins(y, p, bins=5)
    assert [b["n"] for b in bins] == [2] * 5
    assert [b["observed"] for b in bins] == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert bins[0]["predicted"] == pytest.approx((0.05 + 0.15) / 2)


def test_net_benefit_by_hand():
    y, p = np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1])
    curve = net_benefit(y, p, np.array([0.2, 0.5]))
    # pt 0.2: refer 3 (TP 2, FP 1): 2/4 - 1/4 x 0.25; pt 0.5: refer 2 (TP 1, FP 1): 1/4 - 1/4 x 1
    np.testing.assert_allclose(curve["model"], [0.4375, 0.0])
    np.testing.assert_allclose(curve["refer_all"], [0.5 - 0.5 * 0.25, 0.0])
    # a screened population of prevalence 0.1: sensitivity 1, false-positive rate 1/2 at pt 0.2
    assert net_benefit(y, p, np.array([0.2]), prevalence=0.1)["model"][0] == pytest.approx(0.1 - 0.5 * 0.9 * 0.25)


def test_a_score_that_separates_the_classes_has_no_slope():
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.40, 0.41, 0.42, 0.43, 0.44])  # leave-one-out majority: lower exactly for the positives
    metrics = calibration_metrics(y, p)
    assert metrics["separated"] and np.isnan(metrics["calibration_slope"])
    assert not calibration_metrics(y, np.array([0.40, 0.45, 0.42, 0.43, 0.41]))["separated"]
