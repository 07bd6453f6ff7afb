"""Shared fixtures: small phantom cohorts generated once per test session."""

from __future__ import annotations

import pytest

from osteoscreen.data.phantom import PhantomConfig, synthesise


@pytest.fixture(scope="session")
def small_png_cohort(tmp_path_factory):
    """4 subjects (2 osteoporosis), PNG, seed 3."""
    return synthesise(tmp_path_factory.mktemp("png") / "data", PhantomConfig(n=4, positives=2, seed=3))


@pytest.fixture(scope="session")
def small_dicom_cohort(tmp_path_factory):
    """The same 4 subjects as small_png_cohort, written as DICOM (subject 3 is MONOCHROME1)."""
    return synthesise(tmp_path_factory.mktemp("dicom") / "data",
                      PhantomConfig(n=4, positives=2, seed=3, image_format="dicom"))
