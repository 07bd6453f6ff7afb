"""How far predicted probabilities can be read as probabilities: Brier score, logistic recalibration
(calibration intercept and slope) and reliability bins, for out-of-fold probabilities of osteoporosis.

- Brier score: mean (p - y)^2; a model that always says the prevalence π scores π(1 - π).
- Calibration slope b: logistic regression of y on logit(p), logit P(y = 1) = a' + b logit(p). 1 is ideal;
  below 1 the probabilities are too extreme (overfitting), about 0 for scores unrelated to y.
- Calibration intercept a (calibration-in-the-large): the same with the slope fixed at 1, logit P(y = 1) =
  a + logit(p). 0 is ideal; above 0 the model under-predicts the event on average.
  (Van Calster et al., "Calibration: the Achilles heel of predictive analytics", BMC Medicine 2019.)
Probabilities are clipped to [1e-6, 1 - 1e-6] before the logit: heads that say 1.00 are common here.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize
from scipy.special import logit

CLIP = 1e-6


def brier_score(y_true: np.ndarray, p: np.ndarray) -> float:
    y_true, p = np.asarray(y_true, float), np.asarray(p, float)
    return float(np.mean((p - y_true) ** 2))


def _neg_log_likelihood(eta: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.logaddexp(0.0, eta) - y * eta))


def separated(y_true: np.ndarray, p: np.ndarray) -> bool:
    """True when the score orders the classes perfectly (in either direction): then the recalibration slope has no
    maximum-likelihood estimate (it runs off to infinity). Leave-one-out does this to the majority baseline, whose
    score is the training fold's prevalence, lower exactly when the held-out subject is positive."""
    y, p = np.asarray(y_true, int), np.asarray(p, float)
    return bool(p[y == 1].min() > p[y == 0].max() or p[y == 1].max() < p[y == 0].min())


def calibration_intercept_slope(y_true: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(intercept a with the slope fixed at 1, slope b) of logistic recalibration; nan without both classes, and
    nan for the slope when it has no estimate (a constant score, or one that separates the classes)."""
    y = np.asarray(y_true, float)
    offset = logit(np.clip(np.asarray(p, float), CLIP, 1 - CLIP))
    if len(np.unique(y)) < 2:
        return math.nan, math.nan
    intercept = minimize(lambda a: _neg_log_likelihood(a[0] + offset, y), x0=[0.0], method="BFGS").x[0]
    if np.ptp(offset) == 0 or separated(y, p):
        return float(intercept), math.nan
    slope = minimize(lambda ab: _neg_log_likelihood(ab[0] + ab[1] * offset, y), x0=[0.0, 1.0], method="BFGS").x[1]
    return float(intercept), float(slope)


def reliability_bins(y_true: np.ndarray, p: np.ndarray, bins: int = 5) -> list[dict]:
    """Reliability diagram data: subjects split into `bins` groups of (nearly) equal size by predicted
    probability (quantile bins: with n around 70, equal-width bins would leave some nearly empty); per bin the
    mean predicted probability, the observed fraction of osteoporosis and the count."""
    y, p = np.asarray(y_true, float), np.asarray(p, float)
    order = np.argsort(p, kind="stable")
    return [{"predicted": float(p[part].mean()), "observed": float(y[part].mean()), "n": int(len(part))}
            for part in np.array_split(order, min(bins, len(p))) if len(part)]


def calibration_metrics(y_true: np.ndarray, p: np.ndarray, bins: int = 5) -> dict:
    """Brier score (and that of always predicting the prevalence), intercept, slope and reliability bins."""
    y = np.asarray(y_true, float)
    intercept, slope = calibration_intercept_slope(y, p)
    prevalence = float(y.mean())
    return {"brier": brier_score(y, p), "brier_prevalence": prevalence * (1 - prevalence),
            "calibration_intercept": intercept, "calibration_slope": slope,
            "separated": len(np.unique(y)) == 2 and separated(y, p),
            "reliability": reliability_bins(y, p, bins)}

