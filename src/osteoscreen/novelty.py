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
    mean, precision = _moments(features)
    leave_one_out = [_distances(features[[i]], *_moments(np.delete(features, i, axis=0)))[0]
                     for i in range(len(features))]
    return {"mean": mean, "precision": precision, "threshold": float(max(leave_one_out)), "n": len(features)}


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    estimator = LedoitWolf().fit(features)
    return estimator.location_, estimator.precision_


def _distances(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = features - mean
    return np.sqrt(np.einsum("md,de,me->m", centred, precision, centred).clip(min=0))


def novelty_distance(features: np.ndarray, novelty: dict) -> np.ndarray:
    """[m] Mahalanobis distances of subject features [m, D] from the training subjects."""
    return _distances(features, np.asarray(novelty["mean"]), np.asarray(novelty["precision"]))
