"""A warning when a radiograph is unlike the model's training data (another device, another anatomy, a wrong
landmark, an altered image): its distance from the training subjects in the space of the features the head sees.

Feature of a subject: the mean over its 8 patches of the per-patch feature the head receives (frozen mode: the
standardised texture statistics; fine-tune: `OctupletNet.per_patch`), [D] with D = 512 for EfficientNet-Lite0's
default taps. Distance: Mahalanobis, with the Ledoit-Wolf shrinkage covariance of the training subjects (D is
larger than the number of subjects; scikit-learn's LedoitWolf). Threshold: the largest *leave-one-out* distance
of a training subject, i.e. each training subject's distance from the others as a new radiograph would be scored.
A new radiograph from the training population then exceeds it with probability about 1/(n + 1) (1.4 % for 70
subjects): a flag says "look at this input", not "the prediction is wrong".
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf


def subject_features(head_features: torch.Tensor) -> np.ndarray:
    """Subjects' `training.fit.head_features` [m, 8, D] -> [m, D] float64: the mean over their 8 patches."""
    return head_features.float().mean(dim=1).cpu().numpy().astype(np.float64)


def fit_novelty(features: np.ndarray) -> dict:
    """From training features [n, D]: {"mean": [D], "precision": [D, D], "threshold": largest leave-one-out
    distance, "n": n}."""
    shrunk = _shrunk(features)
    mean, precision = (shrunk[0], _precision(*shrunk[1:])) if shrunk else _moments(features)
    leave_one_out = [_loo_distance(features[i], np.delete(features, i, axis=0)) for i in range(len(features))]
    return {"mean": mean, "precision": precision, "threshold": float(max(leave_one_out)), "n": len(features)}


def _shrunk(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The Ledoit-Wolf covariance (1 - a) S + a mu I of features [n, D] (S = X^T X / n of the centred X, mu = tr S
    / D, the shrinkage a exactly as scikit-learn's ledoit_wolf_shrinkage), computed from the n x n Gram matrix
    X X^T so that its cost is O(n^2 D), not O(n D^2) and a D x D inverse (D is 4096 for AlexNet's fc7):
    (mean [D], U [n, D] with (1 - a) S = U^T U, ridge a mu). None where the ridge is 0 (no shrinkage, or
    identical features): scikit-learn's LedoitWolf then decides."""
    n, dims = features.shape
    mean = features.mean(axis=0)
    centred = features - mean
    gram = centred @ centred.T
    trace = np.trace(gram) / n  # tr S
    mu = trace / dims
    frobenius = np.sum(gram ** 2) / n ** 2  # ||S||_F^2 = ||X X^T||_F^2 / n^2
    beta = (np.sum(np.diag(gram) ** 2) / n - frobenius) / (dims * n)
    delta = (frobenius - 2 * mu * trace + dims * mu ** 2) / dims
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    ridge = shrinkage * mu
    if not ridge > 0:
        return None
    return mean, centred * np.sqrt((1 - shrinkage) / n), float(ridge)


def _precision(low_rank: np.ndarray, ridge: float) -> np.ndarray:
    """(U^T U + ridge I)^-1 [D, D] by the Woodbury identity (an n x n solve)."""
    inner = ridge * np.eye(len(low_rank)) + low_rank @ low_rank.T
    return (np.eye(low_rank.shape[1]) - low_rank.T @ np.linalg.solve(inner, low_rank)) / ridge


def _loo_distance(subject: np.ndarray, others: np.ndarray) -> float:
    """The distance of one subject's features [D] from the Ledoit-Wolf fit of the others [n - 1, D]."""
    shrunk = _shrunk(others)
    if shrunk is None:
        return float(_distances(subject[None], *_moments(others))[0])
    mean, low_rank, ridge = shrunk
    centred = subject - mean
    projected = low_rank @ centred
    inner = ridge * np.eye(len(low_rank)) + low_rank @ low_rank.T
    squared = (centred @ centred - projected @ np.linalg.solve(inner, projected)) / ridge
    return float(np.sqrt(max(squared, 0.0)))


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    estimator = LedoitWolf().fit(features)
    return estimator.location_, estimator.precision_


def _distances(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = features - mean
    return np.sqrt(np.einsum("md,de,me->m", centred, precision, centred).clip(min=0))


def novelty_distance(features: np.ndarray, novelty: dict) -> np.ndarray:
    """[m] Mahalanobis distances of subject features [m, D] from the training subjects."""
    return _distances(features, np.asarray(novelty["mean"]), np.asarray(novelty["precision"]))
