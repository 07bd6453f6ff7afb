"""The paper's texture baselines: uniform LBP histograms of the 8 patches, then scikit-learn pipelines.

Features: for each patch (8-bit, native size, before any ImageNet normalisation) and each (P, R) in
LBP_SETTINGS, a normalised histogram of skimage's uniform LBP codes (P + 2 bins); concatenated over patches.
Classifiers (the scaler is fitted inside each training fold by the Pipeline):
- `knn-lbp`: StandardScaler + k-nearest neighbours (k = 5, a fixed choice; fewer on tiny training sets);
- `ensemble-lbp`: a random forest of 300 trees, i.e. bagged decision trees with random feature subsets, the
  closest scikit-learn counterpart of MATLAB's bagged-tree ensemble that such LBP studies used; trees need no
  scaling, and bagging is robust on 70 subjects with 432 features;
- `majority`: always the training folds' majority class, with p = the training-fold osteoporosis fraction;
- `clinical` (not an image method: age and sex, covariates.covariate_matrix): StandardScaler + logistic
  regression (C = 1), the scaler inside the fold; it answers "does the image add anything over age and sex?".
"""

from __future__ import annotations

import numpy as np
from skimage.feature import local_binary_pattern
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from osteoscreen.errors import InputError

LBP_SETTINGS: tuple[tuple[int, int], ...] = ((8, 1), (16, 2), (24, 3))
BASELINES = ("majority", "knn-lbp", "ensemble-lbp")
CLINICAL = "clinical"


def lbp_histograms(patch: np.ndarray) -> np.ndarray:
    """[H, W] uint8 patch -> concatenated normalised uniform-LBP histograms, sum(P + 2) values."""
    if patch.dtype != np.uint8:
        raise InputError(f"LBP needs integer (uint8) patches, got {patch.dtype}")
    histograms = []
    for points, radius in LBP_SETTINGS:
        codes = local_binary_pattern(patch, points, radius, method="uniform")
        counts = np.bincount(codes.astype(np.int64).ravel(), minlength=points + 2)
        histograms.append(counts / counts.sum())
    return np.concatenate(histograms)


def lbp_features(patches: np.ndarray) -> np.ndarray:
    """[8, H, W] uint8 -> [8 * sum(P + 2)] feature vector of one subject."""
    return np.concatenate([lbp_histograms(patch) for patch in patches])


def build_baseline(name: str, seed: int = 0, n_train: int | None = None) -> Pipeline:
    """A fresh, unfitted scikit-learn pipeline for a baseline method (k of KNN capped at n_train)."""
    if name == "majority":
        return make_pipeline(DummyClassifier(strategy="prior"))
    if name == "knn-lbp":
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=min(5, n_train or 5)))
    if name == "ensemble-lbp":
        return make_pipeline(RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=1))
    if name == CLINICAL:
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES + (CLINICAL,))}")
