"""Shared fixtures: small phantom cohorts generated once per test session."""

from __future__ import annotations

import numpy as np
import pytest

from osteoscreen.data.patches import PatchConfig
from osteoscreen.data.phantom import PhantomConfig, bone_parameters, synthesise, trabecular_field
from osteoscreen.data.subject_patches import SubjectPatches
from osteoscreen.landmarks import GROUPS
from osteoscreen.training import Cohort


@pytest.fixture(scope="session")
def small_png_cohort(tmp_path_factory):
    """4 subjects (2 osteoporosis), PNG, seed 3."""
    return synthesise(tmp_path_factory.mktemp("png") / "data", PhantomConfig(n=4, positives=2, seed=3))


@pytest.fixture(scope="session")
def small_dicom_cohort(tmp_path_factory):
    """The same 4 subjects as small_png_cohort, written as DICOM (subject 3 is MONOCHROME1)."""
    return synthesise(tmp_path_factory.mktemp("dicom") / "data",
                      PhantomConfig(n=4, positives=2, seed=3, image_format="dicom"))


def make_planted_cohort(n: int, seed: int, group: str = "premolar") -> Cohort:
    """n subjects (alternating labels) whose `group` patches carry the label (T = -3.5 vs +0.5); every other
    patch has a label-free random T-score. No radiographs: context crops are generated directly."""
    rng = np.random.default_rng(seed)
    config = PatchConfig()
    size = int(np.ceil(config.patch_px * config.context))
    patches = []
    for index in range(n):
        label = index % 2
        crops = []
        for patch in range(8):
            carries_signal = GROUPS[patch // 2] == group
            t_score = (-3.5 if label else 0.5) if carries_signal else rng.uniform(-3.5, 0.5)
            crops.append(0.2 + 0.6 * trabecular_field((size, size), bone_parameters(t_score), 0.1, rng))
        patches.append(SubjectPatches(f"S{index:02d}", label, np.stack(crops).astype(np.float32), config.patch_px, 0))
    return Cohort(patches, config)


@pytest.fixture(scope="session")
def planted_cohort():
    """Factory of planted cohorts: planted_cohort(n, seed) -> Cohort."""
    return make_planted_cohort
