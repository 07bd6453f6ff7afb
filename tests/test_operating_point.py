"""Decision rules chosen on inner out-of-fold scores: calibration maps, the sensitivity threshold, and on a null
cohort the behaviour of a rule chosen without leakage."""

import numpy as np
import pytest

from osteoscreen.core.errors import InputError
from osteoscreen.evaluation.aggregate import summarise
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.evaluation.experiment import run_folds
from osteoscreen.evaluation.operating_point import (
    DecisionRule,
    apply_calibration,
    fit_calibration,
    fit_rule,
    sensitivity_threshold,
)
from osteoscreen.reporting.runs import RunFolder
from osteoscreen.training.config import TrainConfig
from test_calibration import grouped_cohort


def test_sensitivity_threshold_by_hand():
    labels, p = np.array([1, 1, 1, 1, 0]), np.array([0.9, 0.8, 0.3, 0.2, 0.5])
    assert sensitivity_threshold(labels, p, 0.75) == 0.3  # flags 3 of 4 positives: the largest such threshold
    assert sensitivity_threshold(labels, p, 0.76) == 0.2


@pytest.mark.parametrize("method, key, expected", [("platt", "slope", 0.5), ("temperature", "temperature", 2.0)])
def test_calibration_maps_undo_overconfidence(method, key, expected):
    y, p = grouped_cohort(shift=0.0, scale=2.0)  # logits twice the truth
    calibration = fit_calibration(y, p, method)
    assert calibration[key] == pytest.approx(expected, rel=1e-2)
    recalibrated = apply_calibration(p, calibration)
    truth = np.repeat(np.arange(1, 10) / 10, 10)
    np.testing.assert_allclose(recalibrated, truth, atol=0.01)


def test_a_fixed_rule_fits_nothing():
    rule = fit_rule(np.array([0, 1]), np.array([0.2, 0.9]), DecisionRule())
    assert rule.threshold == 0.5 and rule.calibration == {"method": "none"} and "threshold 0.5" in rule.rule


@pytest.mark.parametrize("kwargs, message", [({"calibration": "isotonic"}, "^calibration: expected one of"),
                                             ({"target_sensitivity": 1.0}, "^target_sensitivity: expected None or")])
def test_ill_rules(kwargs, message):
    with pytest.raises(InputError, match=message):
        DecisionRule(**kwargs)


@pytest.fixture(scope="module")
def null_cohort(planted_cohort):
    return planted_cohort(60, seed=7, group="none")  # no patch carries the label


def test_on_a_null_cohort_the_rule_gives_the_sensitivity_asked_and_chance_calibration(null_cohort, tmp_path):
    config = CVConfig(methods=("concat",), protocol="kfold", folds=5, repeats=2,
                      rule=DecisionRule("temperature", target_sensitivity=0.9), train=TrainConfig(views=1, epochs=15))
    records = run_folds(null_cohort, config, RunFolder(tmp_path))[0]["concat"]
    assert all(0 < r["threshold"] < 1 and r["calibration"]["method"] == "temperature" for r in records)
    metrics = summarise({"concat": records}, null_cohort.labels)[1]["concat"]
    at_rule = metrics["at_rule_threshold"]
    low, high = at_rule["ci95"]["OPA"]
    assert low <= 0.9 <= high, at_rule
    assert at_rule["NOPA"] <= 0.35 and abs(at_rule["OPA"] + at_rule["NOPA"] - 1) < 0.25, at_rule  # chance: no
    # leakage makes it look better than sensitivity + specificity = 1
    assert set(at_rule["repeats"]) == {"r00", "r01"}
    raw, calibrated = metrics["calibration_uncalibrated"], metrics["calibration"]
    assert abs(raw["calibration_slope"]) < 0.5  # the head's own scores carry no information
    assert calibrated["brier"] == pytest.approx(calibrated["brier_prevalence"], abs=0.05)  # recalibrated: chance
