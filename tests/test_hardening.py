"""Bad input and faults, second round (issue 25): each class is refused at its root with one line naming what was
wrong, and leaves nothing half-written."""

import json
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


# 2. Everything read back from a RUN folder is checked.

def _cv(data, out, *extra):
    return main(["cv", str(data), "--out", str(out), "--methods", "majority", "--protocol", "kfold", "--folds", "2",
                 "--repeats", "1", *extra])


@pytest.mark.parametrize("damage", [b"", b'{"seed": 0, "method": "majority"', b"[1, 2]", b"\xff\xfe garbage"])
def test_a_damaged_fold_file_is_named_and_computed_again(small_png_cohort, tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert _cv(small_png_cohort, run) == 0
    fold = run / "folds" / "seed-0" / "majority" / "r00-f00.json"
    intact, predictions = fold.read_text(), (run / "predictions.csv").read_text()
    capsys.readouterr()
    fold.write_bytes(damage)
    assert _cv(small_png_cohort, run) == 0
    error = capsys.readouterr().err
    assert f"warning: {fold}: damaged" in error and "computed again" in error
    recomputed, before = json.loads(fold.read_text()), json.loads(intact)
    assert recomputed.pop("wall_s") >= 0 and before.pop("wall_s") >= 0 and recomputed == before
    assert (run / "predictions.csv").read_text() == predictions


def test_a_fold_file_of_another_fold_is_not_taken(small_png_cohort, tmp_path, capsys):
    run = tmp_path / "run"
    assert _cv(small_png_cohort, run) == 0
    folds = run / "folds" / "seed-0" / "majority"
    shutil.copyfile(folds / "r00-f01.json", folds / "r00-f00.json")
    capsys.readouterr()
    assert _cv(small_png_cohort, run) == 0
    assert "its fold is not this fold's" in capsys.readouterr().err
    assert json.loads((folds / "r00-f00.json").read_text())["fold"] == "r00-f00"


@pytest.mark.parametrize("damage", ["", "{not json", "[]", '{"identity": 3}'])
def test_a_damaged_config_json_is_refused_with_its_path(small_png_cohort, tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert _cv(small_png_cohort, run) == 0
    (run / "config.json").write_text(damage)
    capsys.readouterr()
    assert _cv(small_png_cohort, run) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("osteoscreen:")]
    assert error.startswith(f"osteoscreen: error: {run / 'config.json'}: damaged") and "delete the folder" in error
    assert (run / "config.json").read_text() == damage


@pytest.mark.parametrize("damage", ["truncate", "shape"])
def test_a_damaged_feature_cache_is_rebuilt(small_png_cohort, tmp_path, damage):
    import torch
    from safetensors.torch import save_file

    from osteoscreen.data.cohort import Cohort
    from osteoscreen.errors import InputWarning
    from osteoscreen.features import frozen_features
    from osteoscreen.training.config import TrainConfig

    config = TrainConfig(views=1)
    features = frozen_features(Cohort.load(small_png_cohort, cache_dir=tmp_path), config)
    (cache,) = tmp_path.glob("features-*.safetensors")
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:100])
    else:
        save_file({"features": torch.zeros(2, 3)}, str(cache))
    with pytest.warns(InputWarning, match=rf"{cache.name}: damaged feature cache"):
        again = frozen_features(Cohort.load(small_png_cohort, cache_dir=tmp_path), config)
    assert torch.equal(again, features)
    assert torch.equal(frozen_features(Cohort.load(small_png_cohort, cache_dir=tmp_path), config), features)


# 3. One RUN folder, one writer (and one per output folder, one server per dataset).

def test_a_second_cv_on_a_run_folder_in_use_is_refused(small_png_cohort, tmp_path, capsys):
    from osteoscreen.outputs import exclusive

    run = tmp_path / "run"
    run.mkdir()
    with exclusive(run, "this cv RUN folder"):  # another process's lock: flock is per open file
        assert _cv(small_png_cohort, run) == 2
        assert "in use by another osteoscreen process" in capsys.readouterr().err
        assert not (run / "config.json").exists()
    assert _cv(small_png_cohort, run) == 0


def test_a_second_writer_of_an_output_folder_is_refused_and_the_first_keeps_its_work(tmp_path):
    from osteoscreen.outputs import output_folder

    with output_folder(tmp_path / "out") as partial:
        (partial / "mine.txt").write_text("first")
        with pytest.raises(InputError, match="in use by another osteoscreen process"):
            with output_folder(tmp_path / "out"):
                pass
        assert (partial / "mine.txt").read_text() == "first"
    assert (tmp_path / "out" / "mine.txt").read_text() == "first"


def test_one_annotation_server_per_dataset(annotation_dataset):
    from osteoscreen.web.annotations import AnnotationStore

    annotation_dataset = annotation_dataset[0]
    store = AnnotationStore(annotation_dataset)
    with pytest.raises(InputError, match="landmarks.csv .* in use by another osteoscreen process"):
        AnnotationStore(annotation_dataset)
    store.close()
    AnnotationStore(annotation_dataset).close()


# 4. The annotation server does not overwrite what others wrote.

def test_saving_from_the_page_keeps_hand_edits_of_other_subjects(annotation_dataset):
    from osteoscreen.web.annotations import AnnotationStore

    annotation_dataset = annotation_dataset[0]
    store = AnnotationStore(annotation_dataset)
    path = annotation_dataset / "landmarks.csv"
    first, second = store.subjects[0], store.subjects[1]
    lines = path.read_text().splitlines()
    edited = [line.replace(line.split(",")[2], "12.5", 1) if line.startswith(f"{second.subject_id},condyle_right,")
              else line for line in lines]
    assert edited != lines
    path.write_text("\n".join(edited) + "\n")
    points = np.nan_to_num(first.landmarks.copy(), nan=20.0) + 1.0
    store.save(first, points)
    saved = path.read_text()
    assert f"{second.subject_id},condyle_right,12.5," in saved
    assert f"{first.subject_id},condyle_right,{points[0, 0]:.2f},{points[0, 1]:.2f}" in saved
    store.close()
