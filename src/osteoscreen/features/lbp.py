"""LBP histograms for the texture baselines (`lbp_features`): for each patch (8-bit, native size, before any
ImageNet normalisation) and each (P, R) in LBP_SETTINGS, a normalised histogram of skimage's uniform LBP codes
(P + 2 bins), concatenated over the 8 patches; computed once per cohort, memoised in the cohort."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage.feature import local_binary_pattern

from osteoscreen.core.errors import InputError
from osteoscreen.core.utils import thread_map
from osteoscreen.data.cohort import Cohort
from osteoscreen.data.patches import to_uint8

LBP_SETTINGS: tuple[tuple[int, int], ...] = ((8, 1), (16, 2), (24, 3))


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


def subject_lbp(patches: np.ndarray) -> np.ndarray:
    """[8, H, W] uint8 -> [8 * sum(P + 2)] feature vector of one subject."""
    return np.concatenate([lbp_histograms(patch) for patch in patches])


def lbp_features(cohort: Cohort, progress: Callable = iter) -> np.ndarray:
    """[N, 8 * sum(P + 2)] LBP features of every subject of the cohort's root, computed once per cohort (subjects
    side by side on the cores: skimage's LBP releases the GIL)."""
    root = cohort.root
    if "lbp" not in root.memo:
        root.memo["lbp"] = np.stack(thread_map(lambda i: subject_lbp(to_uint8(root.plain_views(i))),
                                               range(len(root)), progress))
    return root.memo["lbp"]
