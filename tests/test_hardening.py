"""Bad input and faults, second round (issue 25): each class is refused at its root with one line naming what was
wrong, and leaves nothing half-written."""

import json
import math
import re
import shutil

import numpy as np
import pydicom
import pytest

from osteoscreen.cli import main
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import LANDMARKS, decision, flagged
from osteoscreen.data.dataset import checked_covariates, load_dataset
from osteoscreen.deploy.model import Model
from osteoscreen.io.imageio import read_radiograph
from osteoscreen.training.config import TrainConfig


@pytest.fixture(scope="module")
def model(screening_model):
    return Model.load(screening_model)


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


def _overflowing_copy(cohort, tmp_path):
    """A copy of a DICOM cohort whose first image has RescaleSlope 1e308: (data folder, that image)."""
    data = tmp_path / "data"
    shutil.copytree(cohort, data)
    path = sorted((data / "images").glob("*.dcm"))[0]
    dataset = pydicom.dcmread(path)
    dataset.RescaleSlope, dataset.RescaleIntercept = "1e308", "0"
    dataset.save_as(path)
    return data, path


def test_a_dicom_whose_rescale_overflows_is_refused_naming_the_file(small_dicom_cohort, tmp_path):
    _, path = _overflowing_copy(small_dicom_cohort, tmp_path)
    with pytest.raises(InputError, match=rf"{path.name}: the DICOM modality or VOI LUT .* non-finite"):
        read_radiograph(path)


def test_predict_never_writes_a_decision_for_a_broken_header(screening_model, small_dicom_cohort, tmp_path, capsys):
    data, path = _overflowing_copy(small_dicom_cohort, tmp_path)
    assert main(["predict", str(screening_model), str(data), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert path.name in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def _blank_png(data) -> None:
    """The first radiograph of a PNG cohort replaced by one grey value (a blank export)."""
    from PIL import Image

    path = sorted((data / "images").glob("*.png"))[0]
    Image.new("I;16", Image.open(path).size, 2000).save(path)


def _window_off_the_values(data) -> None:
    """The first radiograph of a DICOM cohort given a window far above its values (every pixel shown black)."""
    path = sorted((data / "images").glob("*.dcm"))[0]
    dataset = pydicom.dcmread(path)
    dataset.WindowCenter, dataset.WindowWidth = "60000", "10"
    dataset.save_as(path)


@pytest.mark.parametrize("cohort_name, damage", [("small_png_cohort", _blank_png),
                                                 ("small_dicom_cohort", _window_off_the_values)])
def test_a_radiograph_without_contrast_is_refused_not_screened(screening_model, request, tmp_path, capsys,
                                                               cohort_name, damage):
    data = tmp_path / "data"
    shutil.copytree(request.getfixturevalue(cohort_name), data)
    damage(data)
    first = sorted((data / "images").iterdir())[0]
    for command in (["validate", str(data)], ["predict", str(screening_model), str(data), "--out",
                                              str(tmp_path / "out")]):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert f"osteoscreen: error: subject 'P001' ({first}): the image has no contrast" in error, error
        assert "Traceback" not in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("command", ["validate", "patches", "predict"])
def test_a_blank_radiograph_is_reported_with_the_datasets_other_problems(screening_model, small_png_cohort,
                                                                         tmp_path, capsys, command):
    data = tmp_path / "data"
    shutil.copytree(small_png_cohort, data)
    _blank_png(data)
    broken = sorted((data / "images").glob("*.png"))[1]
    broken.write_bytes(broken.read_bytes()[:5000])
    arguments = {"validate": [], "patches": ["--out", str(tmp_path / "out")],
                 "predict": ["--out", str(tmp_path / "out")]}[command]
    model = [str(screening_model)] if command == "predict" else []
    assert main([command, *model, str(data), *arguments]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "osteoscreen: error:" in line]
    assert len(errors) == 2 and "no contrast" in errors[0] and "truncated" in errors[1], errors
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["validate", "predict", "cv"])
def test_landmarks_left_at_one_spot_are_refused_not_screened(screening_model, small_png_cohort, tmp_path, capsys,
                                                            command):
    """An annotation tool's unplaced points (all at one spot) gave 8 copies of one patch, screened 'normal'."""
    data = tmp_path / "data"
    shutil.copytree(small_png_cohort, data)
    lines = (data / "landmarks.csv").read_text().splitlines()
    lines[1:9] = [",".join([*line.split(",")[:2], "500.0", "400.0"]) for line in lines[1:9]]
    (data / "landmarks.csv").write_text("\n".join(lines) + "\n")
    arguments = {"validate": [str(data)], "predict": [str(screening_model), str(data), "--out", str(tmp_path / "out")],
                 "cv": [str(data), "--out", str(tmp_path / "out"), "--methods", "knn-lbp"]}[command]
    assert main([command, *arguments]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if "osteoscreen: error:" in line]
    assert "subject 'P001'" in error and "landmarks condyle_right and condyle_left lie 0.0 px apart" in error, error
    assert "(28 such pair(s))" in error and not (tmp_path / "out").exists()


def test_landmarks_closer_than_half_a_patch_are_named_and_unplaced_ones_skipped():
    from osteoscreen.data.patches import check_apart

    points = np.array([[100.0 * i, 50.0 * (i % 2)] for i in range(8)])
    check_apart(points, side=100)  # 100 px apart and more
    points[5] = points[4] + [30, 40]  # premolar_left 50 px from premolar_right: just allowed
    check_apart(points, side=100)
    points[5] = points[4] + [30, 39]
    with pytest.raises(InputError, match=r"premolar_right and premolar_left lie 49.2 px apart, under half a patch "
                                         r"side \(50 px\)"):
        check_apart(points, side=100)
    points[4] = np.nan  # not placed yet (annotation): no distance
    check_apart(points, side=100)


def test_model_screen_refuses_a_blank_array(model, subject):
    with pytest.raises(InputError, match=r"no contrast \(99 % of its pixels are 0.3\)"):
        model.screen(np.full((1000, 2000), 0.3), _points(subject))


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

    from osteoscreen.core.errors import InputWarning
    from osteoscreen.data.cohort import Cohort
    from osteoscreen.features.frozen import frozen_features

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
    from osteoscreen.io.outputs import exclusive

    run = tmp_path / "run"
    run.mkdir()
    with exclusive(run, "this cv RUN folder"):  # another process's lock: flock is per open file
        assert _cv(small_png_cohort, run) == 2
        assert "in use by another osteoscreen process" in capsys.readouterr().err
        assert not (run / "config.json").exists()
    assert _cv(small_png_cohort, run) == 0


def test_a_second_writer_of_an_output_folder_is_refused_and_the_first_keeps_its_work(tmp_path):
    from osteoscreen.io.outputs import output_folder

    with output_folder(tmp_path / "out") as partial:
        (partial / "mine.txt").write_text("first")
        with pytest.raises(InputError, match="in use by another osteoscreen process"):
            with output_folder(tmp_path / "out"):
                pass
        assert (partial / "mine.txt").read_text() == "first"
    assert (tmp_path / "out" / "mine.txt").read_text() == "first"


class _Terminated(KeyboardInterrupt):
    """What osteoscreen.cli.entry's SIGTERM handler raises."""


def _raise_terminated(signum, frame):
    raise _Terminated


def _built_with_a_signal_at(step: int, signum: int, out, replaces: str | None) -> bool:
    """Build `out` (a.txt = "new") with output_folder while signal `signum` comes at the `step`-th bytecode executed
    in osteoscreen/io/outputs.py: its handler then runs, as Python runs a handler between bytecodes (in the main
    thread, whichever thread the OS gave the signal to). False when the build ended without an interruption."""
    import signal
    import sys

    from osteoscreen.io import outputs

    executed = 0

    def opcode(frame, event, arg):
        nonlocal executed
        if event == "opcode":
            executed += 1
            if executed == step:
                signal.getsignal(signum)(signum, frame)
        return opcode

    def call(frame, event, arg):
        if frame.f_code.co_filename == outputs.__file__:
            frame.f_trace_opcodes = True
            return opcode
        return None

    sys.settrace(call)
    try:
        with outputs.output_folder(out, replaces=replaces) as partial:
            (partial / "a.txt").write_text("new")
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(None)
    return False


@pytest.mark.parametrize("replacing", [False, True])
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_at_any_point_leaves_the_earlier_output_or_the_whole_new_one(tmp_path, replacing, signal_name):
    """Ctrl-C or SIGTERM at each bytecode of an output folder's life in turn: nothing beside `out` is left (CI once
    hit a probe file left in OUT.partial, and an earlier output could be left as OUT.previous), `out` is the earlier
    output or the whole new one, the signal is acted on (at the latest once the output is in place), and the
    caller's signal handlers are given back."""
    import signal

    from osteoscreen.io import outputs

    before = {signum: signal.getsignal(signum) for signum in outputs.STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)
    ours = {signum: signal.getsignal(signum) for signum in outputs.STOP_SIGNALS}
    try:
        step, interrupted = 0, True
        while interrupted:
            step += 1
            out = tmp_path / str(step) / "out"
            out.parent.mkdir()
            if replacing:
                with outputs.output_folder(out, replaces="a.txt") as partial:
                    (partial / "a.txt").write_text("old")
            interrupted = _built_with_a_signal_at(step, getattr(signal, signal_name), out,
                                                  "a.txt" if replacing else None)
            assert {signum: signal.getsignal(signum) for signum in outputs.STOP_SIGNALS} == ours, f"bytecode {step}"
            left = sorted(path.name for path in out.parent.iterdir())
            assert left in ([["out"]] if replacing else [[], ["out"]]), f"bytecode {step}: {left}"
            if left:
                assert sorted(path.name for path in out.iterdir() if path.name != outputs.MANIFEST) == ["a.txt"]
                assert (out / "a.txt").read_text() in (("old", "new") if replacing else ("new",))
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert step > 100  # the signal came at every bytecode up to the end of the build


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


# 7. Writability is checked where we write; storage errors are one line.

def test_an_output_folder_that_cannot_be_changed_is_refused_before_any_work(small_png_cohort, tmp_path, capsys):
    import subprocess

    out = tmp_path / "out"
    out.mkdir()
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        if not _touch_fails(out):
            pytest.skip("the immutable flag does not stop writes here")
        assert main(["patches", str(small_png_cohort), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        (error,) = [line for line in err.splitlines() if line.startswith("osteoscreen:")]
        assert error.startswith(f"osteoscreen: error: {out}: cannot write output here")
        assert "patches:" not in err  # refused before reading any radiograph
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert not (tmp_path / "out.partial").exists()


def _touch_fails(folder) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return True
    (folder / "probe").unlink()
    return False


@pytest.mark.parametrize("code, status, text", [(28, 1, "the disk is full"), (30, 2, "read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_with_the_path(small_png_cohort, tmp_path, capsys, monkeypatch,
                                                            code, status, text):
    import errno
    import os

    from osteoscreen.io import outputs

    assert code == {28: errno.ENOSPC, 30: errno.EROFS}[code]

    def full(index_folder, subject_ids, files):
        raise OSError(code, os.strerror(code), str(index_folder / "index.csv"))

    monkeypatch.setattr(outputs, "write_index", full)
    monkeypatch.setattr("osteoscreen.reporting.patch_export.write_index", full)
    assert main(["patches", str(small_png_cohort), "--out", str(tmp_path / "out")]) == status
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("osteoscreen:")]
    assert error.startswith("osteoscreen: error: ") and "index.csv" in error and text in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


# 8. A task that leaves no subjects is refused with one line.

def test_a_task_that_keeps_no_subjects_is_refused_saying_why(small_png_cohort, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_png_cohort, data)
    lines = (data / "subjects.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = []
    for line in lines[1:]:
        fields = line.split(",")
        fields[header.index("label")], fields[header.index("t_score")] = "osteopenia", "-1.8"
        rows.append(",".join(fields))
    (data / "subjects.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    assert main(["cv", str(data), "--out", str(tmp_path / "run"), "--methods", "majority"]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("osteoscreen:")]
    assert "kept 0 of 4 subject(s)" in error and "4 osteopenia" in error and "--task" in error
    assert not (tmp_path / "run" / "config.json").exists()


# 9. metrics.json is strict JSON.

def test_metrics_json_has_no_nan_tokens(small_png_cohort, tmp_path):
    run = tmp_path / "run"
    assert _cv(small_png_cohort, run) == 0

    def refuse(token):
        raise AssertionError(f"bare {token} in metrics.json")

    metrics = json.loads((run / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["methods"]["majority"]["NPV"] is None  # nobody is called negative: undefined, written null


# 10. Faults leave a clean state.

def test_a_refused_cv_writes_nothing_so_the_corrected_command_runs(small_png_cohort, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["cv", str(small_png_cohort), "--out", str(run), "--methods", "majority", "--protocol", "kfold",
                 "--folds", "5"]) == 2
    assert "--folds 5 exceeds" in capsys.readouterr().err
    assert not run.exists()  # not even the folder
    assert _cv(small_png_cohort, run) == 0


def test_replacing_an_output_never_deletes_files_it_did_not_write(small_png_cohort, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["patches", str(small_png_cohort), "--out", str(out)]) == 0
    assert main(["patches", str(small_png_cohort), "--out", str(out)]) == 0  # an earlier output is replaced
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["patches", str(small_png_cohort), "--out", str(out)]) == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"


def test_sigterm_during_predict_leaves_no_partial_output(screening_model, small_png_cohort, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "osteoscreen.cli", "predict", str(screening_model),
                                str(small_png_cohort), "--out", str(out)], stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "out.partial"
    deadline = time.monotonic() + 120
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists(), "predict ended before it began writing"
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 143 and "osteoscreen: terminated" in error and "Traceback" not in error
    assert not partial.exists() and not out.exists()


def test_sigterm_after_the_command_has_ended_acts_as_it_did_before_it(small_png_cohort, capsys):
    """Once a command has ended its SIGTERM handler is gone: one that came while Python shut down (threading's
    _shutdown, a weakref callback) raised Terminated there, printed as an ignored exception with a traceback."""
    import signal

    before = signal.getsignal(signal.SIGTERM)

    def earlier(signum, frame):
        pass

    signal.signal(signal.SIGTERM, earlier)
    try:
        assert main(["validate", str(small_png_cohort)]) == 0
        assert main(["validate", str(small_png_cohort / "nowhere")]) == 2
        assert signal.getsignal(signal.SIGTERM) is earlier
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("signal_name, code, line", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_signal_inside_a_constructor_still_ends_in_one_line(tmp_path, signal_name, code, line):
    """The signal can land while tqdm builds its progress bar (seen in CI: SIGTERM during predict); the half-built
    bar's finalizer then fails, and Python printed that as a traceback after the one line. The same with an
    object built to fail like it, deterministically."""
    import subprocess
    import sys

    script = f"""
import os, signal, sys
import osteoscreen.cli.parser as parser
from osteoscreen.cli import main

class HalfBuilt:
    def __init__(self):
        os.kill(os.getpid(), signal.{signal_name})  # arrives before the attributes are set, as in tqdm.__init__
        self.pos = 0

    def __del__(self):
        abs(self.pos)  # tqdm.close() on a half-built bar: AttributeError

def run(args):
    HalfBuilt()

parser.cmd_validate = run
sys.exit(main(["validate", {str(tmp_path)!r}]))
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stderr) == (code, f"osteoscreen: {line}\n")


# 5. The Python API checks its arguments like scikit-learn.

def test_input_errors_are_value_errors_and_type_errors_are_type_errors(small_png_cohort):
    import osteoscreen
    from osteoscreen.core.errors import ArgumentTypeError

    with pytest.raises(TypeError, match="patch: expected PatchConfig or NoneType"):
        osteoscreen.load_dataset(small_png_cohort, patch="100")
    with pytest.raises(ArgumentTypeError, match="cache_dir"):
        osteoscreen.load_dataset(small_png_cohort, cache_dir=3)
    with pytest.raises(ValueError, match="head: expected one of"):
        osteoscreen.TrainConfig(head="nope")


def test_cross_validate_names_its_wrong_arguments(small_png_cohort):
    import osteoscreen

    cohort = osteoscreen.load_dataset(small_png_cohort)
    with pytest.raises(TypeError, match=r"config: expected CVConfig or NoneType .*got dict"):
        osteoscreen.cross_validate(cohort, {"methods": ["majority"]})
    with pytest.raises(TypeError, match=r"cohort: expected Cohort \(osteoscreen.load_dataset\(DATA\)\), got str"):
        osteoscreen.cross_validate(str(small_png_cohort), osteoscreen.CVConfig(methods=("majority",)))


@pytest.mark.parametrize("params, message", [
    ({"hidden": -1}, r"hidden: expected a value in \[1, 65536\], got -1"),
    ({"views": 2.5}, "views: expected an integer, got 2.5"),
    ({"lr_head": math.nan}, "lr_head: expected a finite number"), ({"lr_head": math.inf}, "lr_head: expected"),
    ({"lr_head": -1.0}, "lr_head: expected a number > 0"),
    ({"momentum": 1.5}, r"momentum: expected a number in \[0, 1\)"),
    ({"epochs": "3"}, "epochs: expected an integer"), ({"clinical": 1}, "clinical: expected True or False"),
    ({"activation": "relu"}, "activation: expected one of softmax, sigmoid"),
    ({"weight_decay": -1e-4}, "weight_decay: expected a number >= 0"),
    ({"taps": [1, "a"]}, "taps: expected a tuple of an integer or None")])
def test_head_classifier_checks_each_parameter_on_fit_naming_it(small_png_cohort, params, message):
    import osteoscreen

    cohort = osteoscreen.load_dataset(small_png_cohort)
    with pytest.raises(ValueError, match=message):
        osteoscreen.HeadClassifier(**{"epochs": 1, "views": 1, **params}).fit(cohort)


def test_configurations_take_numpy_numbers_and_lists_as_their_plain_kinds():
    import osteoscreen

    config = osteoscreen.TrainConfig(epochs=np.int64(3), lr_head=np.float32(0.5), taps=[1, 2])
    assert type(config.epochs) is int and type(config.lr_head) is float and config.taps == (1, 2)
    assert osteoscreen.CVConfig(methods=["majority"]).methods == ("majority",)
    with pytest.raises(ValueError, match="seed: expected an integer >= 0"):
        osteoscreen.Baseline("majority", seed=-1).fit(None)


# Judgement calls: implausible values warn, the Origin's port counts, stalled uploads time out, no cache in HOME.

@pytest.mark.parametrize("field, value, warned", [("t_score", "-99", "t_score: -99 is outside"),
                                                  ("t_score", "1e308", "t_score: 1e+308 is outside"),
                                                  ("pixel_spacing_mm", "1e-9", "pixel_spacing_mm: 1e-09 is outside")])
def test_implausible_values_are_used_with_a_warning_naming_the_row(small_png_cohort, tmp_path, field, value, warned):
    from osteoscreen.core.errors import InputWarning

    data = tmp_path / "data"
    shutil.copytree(small_png_cohort, data)
    lines = (data / "subjects.csv").read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[1].split(",")
    fields[header.index(field)] = value
    if field == "t_score":
        fields[header.index("label")] = "normal" if float(value) > 0 else "osteoporosis"
    (data / "subjects.csv").write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    with pytest.warns(InputWarning, match="subjects.csv:2: field " + re.escape(warned)):
        load_dataset(data, check_images=False)


def test_a_number_with_underscores_is_not_a_number_in_a_csv(small_png_cohort, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_png_cohort, data)
    lines = (data / "subjects.csv").read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[1].split(",")
    fields[header.index("t_score")] = "-2_5"
    (data / "subjects.csv").write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    with pytest.raises(InputError, match=r"subjects.csv:2: field t_score: not a number '-2_5'"):
        load_dataset(data, check_images=False)


def test_a_stalled_upload_is_answered_408_and_closed():
    import asyncio

    from osteoscreen.web.guards import BodySizeLimit

    async def app(scope, receive, send):
        await receive()
        raise AssertionError("the body never came")

    sent = []

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/screen", "headers": [(b"content-length", b"10")]}
    asyncio.run(asyncio.wait_for(BodySizeLimit(app, 100, stall_s=0.05)(scope, receive, send), 5))
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert b"stalled" in sent[1]["body"]


@pytest.mark.parametrize("origin, status", [("http://127.0.0.1:8000", 200), ("http://127.0.0.1:3000", 403),
                                            ("http://127.0.0.1", 403), ("https://127.0.0.1:8000", 200)])
def test_the_origin_must_name_the_port_the_request_came_to(screening_model, origin, status):
    from conftest import local_client
    from osteoscreen.web.app import create_app

    client = local_client(create_app(screening_model))
    response = client.get("/api/info", headers={"host": "127.0.0.1:8000", "origin": origin})
    assert response.status_code == status


def test_the_command_line_keeps_matplotlib_out_of_home(small_png_cohort, tmp_path):
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    subprocess.run([sys.executable, "-m", "osteoscreen.cli", "patches", str(small_png_cohort), "--out",
                    str(tmp_path / "out")], env={**env, "HOME": str(home)}, check=True, capture_output=True)
    assert (tmp_path / "out" / "overview.png").exists()
    assert [str(p.relative_to(home)) for p in home.rglob("*")] == []


# Library review, item 1: a +clinical model's decision rule is fitted on inner scores of the +clinical model.

def test_the_decision_rule_of_a_clinical_model_is_fitted_on_the_clinical_model(small_png_cohort, monkeypatch):
    import osteoscreen
    from osteoscreen.evaluation.crossval import FoldRunner
    from osteoscreen.evaluation.operating_point import DecisionRule

    asked = []

    def inner_scores(self, method, train_sets):
        asked.append((method, self.config.methods))
        return [np.linspace(0.1, 0.9, len(train)) for train in train_sets]

    monkeypatch.setattr(FoldRunner, "inner_scores", inner_scores)
    cohort = osteoscreen.load_dataset(small_png_cohort)
    model = Model.fit(cohort, "group-attention+clinical", osteoscreen.TrainConfig(epochs=1, views=1),
                      DecisionRule(target_sensitivity=0.9, inner_folds=2))
    assert asked == [("group-attention+clinical", ("group-attention+clinical",))]
    assert model.covariates and model.rule.threshold < 0.9


# Library review, item 4: a model trained in bf16 runs in fp32 where bf16 is not native, with the same decisions.

def test_a_bf16_model_runs_in_fp32_where_bf16_is_not_native(small_png_cohort, tmp_path, monkeypatch):
    from osteoscreen.core import precision
    from osteoscreen.core.errors import InputWarning
    from osteoscreen.data.cohort import Cohort

    cohort = Cohort.load(small_png_cohort)
    monkeypatch.setattr(precision, "bf16_native", lambda device="cpu": True)
    model_dir = Model.fit(cohort, config=TrainConfig(views=1, epochs=3, precision="bf16")).save(tmp_path / "model")
    native = Model.load(model_dir)
    assert native.config.precision == "bf16"
    monkeypatch.setattr(precision, "bf16_native", lambda device="cpu": False)
    with pytest.warns(InputWarning, match="trained in bf16, which this machine only emulates: it runs in fp32"):
        emulated = Model.load(model_dir)
    assert emulated.config.precision == "fp32" and emulated.info["config"]["precision"] == "bf16"
    bf16, fp32 = native.predict(cohort), emulated.predict(cohort)
    assert [s.decision for s in bf16] == [s.decision for s in fp32]
    # bf16 features round to 8 bits of mantissa: p moved by up to 0.039 here, the decisions did not
    np.testing.assert_allclose([s.probability for s in bf16], [s.probability for s in fp32], atol=0.06)


# Library review, item 7: no side effects at import or on the caller's global state.

def test_the_api_leaves_the_callers_plotting_backend_random_state_and_cudnn_flags_alone(small_png_cohort, tmp_path):
    import subprocess
    import sys

    code = f"""
import matplotlib
matplotlib.use("svg")
import torch
torch.manual_seed(123)
state, benchmark = torch.get_rng_state(), torch.backends.cudnn.benchmark
import osteoscreen
from types import SimpleNamespace
import numpy as np
from osteoscreen.reporting.visualise import screening_figure, subject_montage
cohort = osteoscreen.load_dataset({str(small_png_cohort)!r})
estimator = osteoscreen.HeadClassifier(views=1, epochs=2).fit(cohort)
estimator.predict_proba(cohort)
subject = SimpleNamespace(subject_id="s", landmarks=np.full((8, 2), 20.0), landmark_confidence=None,
                          landmark_flags=None)
pixels = np.linspace(0, 1, 80000).reshape(200, 400)
screening_figure(pixels, subject, cohort.patches[0], 1.25, 0.7, None, "osteoporosis", 0.5,
                 {str(tmp_path / "f.png")!r})  # matplotlib's figure
subject_montage(cohort.patches[0].plain_views(1.25), "s").save({str(tmp_path / "m.png")!r})  # Pillow's
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert torch.equal(torch.get_rng_state(), state), "the global generator moved"
assert torch.backends.cudnn.benchmark == benchmark
print("untouched")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "untouched" in result.stdout, result.stderr[-2000:]
    assert (tmp_path / "f.png").read_bytes()[:4] == (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
