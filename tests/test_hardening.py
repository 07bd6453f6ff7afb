"""Bad input and faults, second round (issue 25): each class is refused at its root with one line naming what was
wrong, and leaves nothing half-written."""

import math
import shutil

import numpy as np
import pydicom
import pytest

from osteoscreen.cli import main
from osteoscreen.data.dataset import checked_covariates, load_dataset
from osteoscreen.data.imageio import read_radiograph
from osteoscreen.errors import InputError
from osteoscreen.landmarks import LANDMARKS, decision, flagged
from osteoscreen.model import Model


@pytest.fixture(scope="module")
def model(web_model):
    return Model.load(web_model)


@pytest.fixture(scope="module")
def subject(small_png_cohort):
    return load_dataset(small_png_cohort).subjects[0]


def _points(subject) -> dict:
    return dict(zip(LANDMARKS, subject.landmarks.tolist(), strict=True))


# 1. A non-finite number never becomes a decision.

@pytest.mark.parametrize("p", [math.nan, math.inf, -math.inf])
def test_a_non_finite_probability_is_refused_not_decided_normal(p):
    with pytest.raises(InputError, match="not a finite number"):
        decision(p)
    with pytest.raises(InputError, match=r"1 of 3"):
        flagged(np.array([0.2, p, 0.9]))
    with pytest.raises(InputError, match="not a finite number"):
        flagged(np.array([0.2]), threshold=math.nan)
    assert decision(0.5) == "osteoporosis" and decision(0.49) == "normal"


def test_a_dicom_whose_rescale_overflows_is_refused_naming_the_file(small_dicom_cohort, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_dicom_cohort, data)
    path = sorted((data / "images").glob("*.dcm"))[0]
    dataset = pydicom.dcmread(path)
    dataset.RescaleSlope, dataset.RescaleIntercept = "1e308", "0"
    dataset.save_as(path)
    with pytest.raises(InputError, match=rf"{path.name}: the DICOM modality or VOI LUT .* non-finite"):
        read_radiograph(path)


def test_predict_never_writes_a_decision_for_a_broken_header(web_model, small_dicom_cohort, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_dicom_cohort, data)
    path = sorted((data / "images").glob("*.dcm"))[0]
    dataset = pydicom.dcmread(path)
    dataset.RescaleSlope, dataset.RescaleIntercept = "1e308", "0"
    dataset.save_as(path)
    assert main(["predict", str(web_model), str(data), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert path.name in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_model_screen_refuses_a_nan_pixel(model, subject):
    pixels = read_radiograph(subject.image_path).pixels.copy()
    assert model.screen(pixels, _points(subject)).decision in ("normal", "osteoporosis")
    pixels[5, 7] = np.nan
    with pytest.raises(InputError, match=r"image: 1 pixel\(s\) are not finite"):
        model.screen(pixels, _points(subject))


# 6. Model.screen checks its inputs as the CLI does.

@pytest.mark.parametrize("shape, match", [((40, 50, 3), r"\[H, W\] array"), ((2, 40, 50), r"\[H, W\] array"),
                                          ((400,), r"\[H, W\] array")])
def test_model_screen_refuses_arrays_that_are_not_grey_images(model, subject, shape, match):
    with pytest.raises(InputError, match=match):
        model.screen(np.zeros(shape, np.float32), _points(subject))
    with pytest.raises(InputError, match=r"in \[0, 1\], got 255 to 255"):
        model.screen(np.full((40, 50), 255.0), _points(subject))


@pytest.mark.parametrize("age, sex, message", [(None, "x", "sex: expected F or M"), (None, 1, "sex: expected"),
                                               (-50, None, "age: expected years between 0 and 130"),
                                               (math.nan, None, "age: expected"), ("old", None, "age: expected"),
                                               (True, None, "age: expected")])
def test_model_screen_refuses_covariates_the_cli_refuses(model, subject, age, sex, message):
    with pytest.raises(InputError, match=message):
        model.screen(subject.image_path, _points(subject), age=age, sex=sex)


def test_covariates_are_parsed_once_for_the_cli_the_page_and_the_api():
    assert checked_covariates("63", "female") == (63.0, "F")
    assert checked_covariates(63, " Male ") == (63.0, "M")
    assert checked_covariates(None, None) == (None, None)


def test_model_screen_refuses_landmarks_that_are_not_finite_numbers(model, subject):
    points = _points(subject)
    points["angle_left"] = (math.nan, 3.0)
    with pytest.raises(InputError, match="finite number"):
        model.screen(subject.image_path, points)
    points["angle_left"] = ("a", "b")
    with pytest.raises(InputError, match="as numbers"):
        model.screen(subject.image_path, points)
