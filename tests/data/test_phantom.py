import hashlib

import numpy as np
import pydicom
import pytest

from osteoscreen.data.dataset import load_dataset
from osteoscreen.data.patches import PatchConfig
from osteoscreen.data.phantom import (
    PhantomConfig,
    bone_parameters,
    cohort_labels,
    render_subject,
    synthesise,
    trabecular_field,
)
from osteoscreen.data.subject_patches import load_subject_patches
from osteoscreen.errors import InputError


def test_default_cohort_labels():
    labels = cohort_labels(PhantomConfig())
    assert len(labels) == 70 and labels.sum() == 49


def test_subject_is_deterministic_and_realistic_size():
    a, b = render_subject(PhantomConfig(seed=5), 0, 1), render_subject(PhantomConfig(seed=5), 0, 1)
    assert hashlib.sha256(a.pixels.tobytes()).digest() == hashlib.sha256(b.pixels.tobytes()).digest()
    height, width = a.pixels.shape
    assert 2000 <= width <= 3000 and 1000 <= height <= 1500 and a.pixels.dtype == np.uint16
    assert a.t_score <= -2.5  # WHO: osteoporosis
    assert render_subject(PhantomConfig(seed=5), 0, 0).t_score >= -1.0


def test_cohort_files_are_byte_for_byte_reproducible(tmp_path, small_png_cohort):
    again = synthesise(tmp_path / "again", PhantomConfig(n=4, positives=2, seed=3))
    for name in ["subjects.csv", "landmarks.csv", "images/P001.png", "images/P004.png"]:
        assert (again / name).read_bytes() == (small_png_cohort / name).read_bytes(), name


def test_bone_parameters_follow_the_t_score():
    healthy, osteoporotic = bone_parameters(0.5), bone_parameters(-3.5)
    assert healthy.bone_volume_fraction > osteoporotic.bone_volume_fraction
    assert healthy.trabecular_thickness_mm > osteoporotic.trabecular_thickness_mm
    assert healthy.trabecular_separation_mm < osteoporotic.trabecular_separation_mm


def test_trabecular_field_area_fraction_matches_bone_volume_fraction():
    params = bone_parameters(0.0)
    field = trabecular_field((256, 256), params, 0.1, np.random.default_rng(0))
    assert abs(field.mean() - params.bone_volume_fraction) < 0.05


def test_dicom_and_png_give_the_same_patches(small_png_cohort, small_dicom_cohort):
    png, dicom = load_dataset(small_png_cohort), load_dataset(small_dicom_cohort)
    photometrics = {pydicom.dcmread(s.image_path, stop_before_pixels=True).PhotometricInterpretation
                    for s in dicom.subjects}
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    for config in (PatchConfig(), PatchConfig(patch_mm=8.0)):
        for a, b in zip(png.subjects, dicom.subjects, strict=True):
            pa, pb = load_subject_patches(a, config), load_subject_patches(b, config)
            assert pa.side == pb.side
            np.testing.assert_allclose(pa.crops, pb.crops, atol=1e-5)


def test_files_say_they_are_synthetic(small_png_cohort, small_dicom_cohort):
    from PIL import Image

    with Image.open(small_png_cohort / "images" / "P001.png") as image:
        assert "Synthetic phantom" in image.info["Description"]
    ds = pydicom.dcmread(small_dicom_cohort / "images" / "P001.dcm", stop_before_pixels=True)
    assert "Synthetic phantom" in ds.ImageComments and ds.PixelSpacing is not None


@pytest.mark.parametrize("kwargs", [{"n": 1}, {"positives": 9, "n": 4}, {"image_format": "gif"},
                                    {"signal": {"condyle": 2.0}}])
def test_ill_args(kwargs):
    with pytest.raises(InputError):
        PhantomConfig(**kwargs)


def test_refuses_to_overwrite(small_png_cohort):
    with pytest.raises(InputError, match="already holds a dataset"):
        synthesise(small_png_cohort, PhantomConfig(n=2, positives=1))
