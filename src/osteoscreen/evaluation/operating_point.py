"""The decision rule of a screening model, chosen without leakage: an optional recalibration of its probabilities
and the threshold at which it flags osteoporosis.

Both are fitted on *inner out-of-fold* scores: the training subjects are split into `inner_folds` stratified
folds, a model is trained on each inner training part and scores the part it left out, so every training
subject gets a score from a model that never saw it. Nothing of the outer test subject enters (cross-validation
fits a rule per outer training fold; `train` fits one on all its subjects the same way). This is the pattern of
scikit-learn's CalibratedClassifierCV and TunedThresholdClassifierCV.

- calibration `platt`: logistic regression of the outcome on logit(p), p' = expit(a + b logit(p)) (Platt 1999, on
  logits); `temperature`: p' = expit(logit(p) / T), one parameter, keeps the ranking and the 0.5 point
  (Guo et al. 2017); `none` (the default, fixed in advance: with about 70 subjects a recalibration fitted on
  about 56 inner scores is itself noisy, so it is an option, measured in the report, not a default).
- threshold: 0.5, or with `target_sensitivity` S the largest threshold whose inner sensitivity is at least S
  (the k-th highest inner score of the positives, k = ceil(S x positives)): a screening test is run at a chosen
  sensitivity because a missed osteoporosis costs more than a DXA referral.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from osteoscreen.core.arguments import check_fields, check_range
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import THRESHOLD
from osteoscreen.evaluation.calibration import CLIP

CALIBRATIONS = ("none", "platt", "temperature")


@dataclass(frozen=True)
class DecisionRule:
    """How a model's decision rule is chosen: calibration (CALIBRATIONS), target_sensitivity (None: threshold 0.5)
    and the number of inner folds that produce the scores both are fitted on."""

    calibration: str = "none"
    target_sensitivity: float | None = None
    inner_folds: int = 5

    def __post_init__(self):
        check_fields(self)
        if self.calibration not in CALIBRATIONS:
            raise InputError(f"calibration: expected one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")
        check_range(self.target_sensitivity is None or 0 < self.target_sensitivity < 1, "target_sensitivity",
                    "None or a number strictly between 0 and 1", self.target_sensitivity)
        if self.inner_folds < 2:
            raise InputError(f"inner folds must be >= 2, got {self.inner_folds}")

    @property
    def fixed(self) -> bool:
        """True when nothing is fitted: no calibration, threshold 0.5."""
        return self.calibration == "none" and self.target_sensitivity is None

    def describe(self) -> str:
        threshold = ("threshold 0.5" if self.target_sensitivity is None else
                     f"threshold chosen for sensitivity {self.target_sensitivity:.2f}")
        calibration = "uncalibrated" if self.calibration == "none" else f"{self.calibration} calibration"
        how = "" if self.fixed else (f", fitted on {self.inner_folds}-fold inner out-of-fold scores of the "
                                     "training subjects")
        return f"{threshold}, {calibration}{how}"


def inner_splits(labels: np.ndarray, rule: DecisionRule, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified inner folds over positions 0..n-1 of a training set with these labels (fewer folds when the
    smaller class has fewer subjects than rule.inner_folds; at least 2 of each class are needed)."""
    smaller = int(np.bincount(labels, minlength=2).min())
    if smaller < 2:
        raise InputError("choosing a decision rule needs at least 2 training subjects of each class")
    from sklearn.model_selection import StratifiedKFold  # scikit-learn loads in 1 s: not with the command line

    splitter = StratifiedKFold(min(rule.inner_folds, smaller), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def fit_calibration(labels: np.ndarray, p: np.ndarray, method: str) -> dict:
    """The calibration map fitted on (labels, scores): {"method", "intercept", "slope"} (platt) or
    {"method", "temperature"}; {"method": "none"} fits nothing."""
    if method == "none":
        return {"method": "none"}
    z = logit(np.clip(np.asarray(p, float), CLIP, 1 - CLIP))
    y = np.asarray(labels, int)
    if method == "platt":
        from sklearn.linear_model import LogisticRegression  # see inner_splits

        model = LogisticRegression(C=1e6, max_iter=1000).fit(z[:, None], y)  # effectively unpenalised
        return {"method": "platt", "intercept": float(model.intercept_[0]), "slope": float(model.coef_[0, 0])}

    from scipy.optimize import minimize_scalar  # 0.4 s to load: see inner_splits

    def loss(log_t: float) -> float:
        eta = z / math.exp(log_t)
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta))

    return {"method": "temperature", "temperature": math.exp(minimize_scalar(loss, bounds=(-5, 5),
                                                                              method="bounded").x)}


def apply_calibration(p: np.ndarray, calibration: dict) -> np.ndarray:
    """Scores mapped through a fitted calibration (unchanged for method none)."""
    p = np.asarray(p, float)
    if calibration["method"] == "none":
        return p
    z = logit(np.clip(p, CLIP, 1 - CLIP))
    if calibration["method"] == "platt":
        return expit(calibration["intercept"] + calibration["slope"] * z)
    return expit(z / calibration["temperature"])


def sensitivity_threshold(labels: np.ndarray, p: np.ndarray, target: float) -> float:
    """The largest threshold t with mean(p[labels == 1] >= t) >= target."""
    positives = np.sort(np.asarray(p, float)[np.asarray(labels) == 1])[::-1]
    if len(positives) == 0:
        raise InputError("a sensitivity target needs positive training subjects")
    return float(positives[math.ceil(target * len(positives)) - 1])


@dataclass(frozen=True)
class FittedRule:
    """A decision rule as fitted: calibration map, threshold on the calibrated probability, and how it was chosen
    (`rule`, DecisionRule.describe)."""

    calibration: dict
    threshold: float
    rule: str

    def probability(self, p: np.ndarray) -> np.ndarray:
        return apply_calibration(p, self.calibration)

    def to_dict(self) -> dict:
        return {"calibration": self.calibration, "threshold": self.threshold, "rule": self.rule}


FIXED_RULE = FittedRule({"method": "none"}, THRESHOLD, DecisionRule().describe())


def fit_rule(labels: np.ndarray, inner_p: np.ndarray, rule: DecisionRule) -> FittedRule:
    """The rule fitted on inner out-of-fold scores of training subjects (labels [n], inner_p [n])."""
    calibration = fit_calibration(labels, inner_p, rule.calibration)
    calibrated = apply_calibration(inner_p, calibration)
    threshold = (THRESHOLD if rule.target_sensitivity is None
                 else sensitivity_threshold(labels, calibrated, rule.target_sensitivity))
    return FittedRule(calibration, threshold, rule.describe())
