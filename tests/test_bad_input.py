"""The twelve classes of bad input of the hardening issue, and its judgement calls, through the command line.

Each class is tested at its root mechanism with several members of the class, not only the reported example:
1 subject ids as paths, 2 model.json (test_screening.py), 3 decoded size, 4 DICOM headers and syntaxes
(data/test_imageio.py), 5 CSV rows longer than the header, 6 annotation saves (test_web_api.py), 7 annotation
JSON structure, 8 figure names, 9 whole-dataset check before `patches` writes, 10 and 12 the web API
(test_web_api.py), 11 bad output locations.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osteoscreen.cli import main
from osteoscreen.data.dataset import DatasetError, load_dataset
from osteoscreen.io.outputs import subject_file_names

ADVERSARIAL_IDS = ["../../../escaped", "/tmp/absolute-id", "a/b", "a b", "a_b", "a_b-2", "A_B", ".hidden", "CON",
                   "x" * 300, "Zoë", "a_b~0123456789ab", "..", "-rf"]


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")}


def with_subject_ids(source: Path, out: Path, ids: list[str], labels: list[str] | None = None) -> Path:
    """A copy of a dataset whose subjects get the given ids (and labels)."""
    shutil.copytree(source, out)
    rows = list(csv.DictReader(open(source / "subjects.csv", newline="")))
    renamed = dict(zip([row["subject_id"] for row in rows], ids, strict=False))
    for row, new in zip(rows, ids, strict=False):
        row["subject_id"] = new
    for row, label in zip(rows, labels or [], strict=False):
        row["label"] = label
    landmarks = list(csv.DictReader(open(source / "landmarks.csv", newline="")))
    for row in landmarks:
        row["subject_id"] = renamed[row["subject_id"]]
    for name, table in (("subjects.csv", rows), ("landmarks.csv", landmarks)):
        with open(out / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(table)
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("osteoscreen: error:")]
    assert errors, err
    return "\n".join(errors)


# 1 and 8: subject ids never become paths as they are; names are unique and deterministic

def test_file_names_of_adversarial_ids_are_safe_unique_and_independent_of_order():
    names = subject_file_names(ADVERSARIAL_IDS)
    assert len({name.casefold() for name in names}) == len(names)
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith((".", "-")) and len(name) <= 93
        assert name.split(".")[0].upper() != "CON"
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~")
    by_id = dict(zip(ADVERSARIAL_IDS, names, strict=True))
    assert dict(zip(ADVERSARIAL_IDS[::-1], subject_file_names(ADVERSARIAL_IDS[::-1]), strict=True)) == by_id
    assert by_id["a_b"] != by_id["A_B"] and by_id["a_b-2"] == "a_b-2"  # a safe id keeps its name unless case clashes
    assert subject_file_names(["P001", "P002"]) == ["P001", "P002"]


def test_patches_writes_every_subject_inside_out_whatever_its_id(small_png_cohort, tmp_path, capsys):
    ids = ["../../../escaped", str(tmp_path / "absolute-id"), "a/b", "a b"]
    data = with_subject_ids(small_png_cohort, tmp_path / "work" / "data", ids)
    before = files_under(tmp_path) - files_under(tmp_path / "work")
    out = tmp_path / "work" / "out"
    assert main(["patches", str(data), "--out", str(out)]) == 0
    assert files_under(tmp_path) - files_under(tmp_path / "work") == before  # nothing written outside
    index = list(csv.DictReader(open(out / "index.csv")))
    assert [row["subject_id"] for row in index] == ids
    for row in index:
        assert (out / "patches" / row["file"] / "condyle_right.png").is_file()
        assert (out / "montages" / f"{row['file']}.png").is_file()
    assert not (tmp_path / "absolute-id").exists() and not Path("/escaped").exists()


def test_predict_figures_of_colliding_ids_are_distinct_and_indexed(small_png_cohort, screening_model, tmp_path):
    ids = ["a_b-2", "a b", "a_b", "A_B"]
    data = with_subject_ids(small_png_cohort, tmp_path / "data", ids, labels=["", "", "", ""])
    assert main(["predict", str(screening_model), str(data), "--out", str(tmp_path / "screen")]) == 0
    index = list(csv.DictReader(open(tmp_path / "screen" / "figures" / "index.csv")))
    assert [row["subject_id"] for row in index] == ids
    assert len({row["file"].casefold() for row in index}) == 4
    assert {path.name for path in (tmp_path / "screen" / "figures").glob("*.png")} == {row["file"] for row in index}
    assert index[0]["file"] == "a_b-2.png"  # and no other subject's figure can take that name


# 5: rows longer than the header

@pytest.mark.parametrize("table, line, message", [
    ("subjects.csv", "P002,images/P002.png,normal,-1.2,60,F,0.1,",
     r"subjects.csv:3: 8 fields, header has 7 \(a trailing comma"),
    ("subjects.csv", "Smith, J,images/P002.png,normal,-1.2,60,F,0.1", r"subjects.csv:3: 8 fields, header has 7"),
    ("landmarks.csv", "P001,condyle_right,301,6,120,5",
     r"landmarks.csv:2: 6 fields, header has 4 \(a decimal comma, as in '301,6'\? write 301.6"),
])
def test_rows_longer_than_the_header_are_reported_with_file_and_line(small_png_cohort, tmp_path, capsys, table, line,
                                                                      message):
    data = shutil.copytree(small_png_cohort, tmp_path / "data")
    lines = (data / table).read_text().splitlines()
    number = int(message.split(":")[1])
    lines[number - 1] = line
    (data / table).write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(data)
    assert main(["validate", str(data)]) == 2
    assert f"{table}:{number}: " in one_error_line(capsys)


# 7: annotation JSON structure

LABELME_POINT = {"label": "condyle_right", "points": [[10.0, 20.0]], "shape_type": "point"}


@pytest.mark.parametrize("payload, where", [
    ({"shapes": "not a list"}, "$.shapes: expected an array"),
    ({"shapes": ["a string"]}, "$.shapes[0]: expected an object"),
    ({"shapes": [{"label": "condyle_right"}]}, "$.shapes[0]: missing member 'points'"),
    ({"shapes": [{**LABELME_POINT, "points": [[1.0]]}]}, "$.shapes[0].points[0]: expected an array of 2"),
    ({"shapes": [{**LABELME_POINT, "points": [["a", 2]]}]}, "$.shapes[0].points[0][0]: expected a number"),
    ({"shapes": [{**LABELME_POINT, "points": [[None, 2]]}]}, "$.shapes[0].points[0][0]: expected a number"),
    ({"shapes": [{**LABELME_POINT, "label": 5}]}, "$.shapes[0].label: expected a string"),
    ({"shapes": [LABELME_POINT], "imagePath": ["x"]}, "$.imagePath: expected a string"),
    ({"images": "x", "annotations": []}, "$.images: expected an array"),
    ({"images": [{"id": 1}], "annotations": []}, "$.images[0]: missing member 'file_name'"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [1]}, "$.annotations[0]: expected an object"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"keypoints": ["condyle_right"]}],
      "annotations": []}, "$.categories[0]: missing member 'id'"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "keypoints": ["condyle_right"]}],
      "annotations": [{"image_id": 1, "category_id": 1, "keypoints": ["x", 2, 2]}]},
     "$.annotations[0].keypoints[0]: expected a number"),
])
def test_malformed_annotation_files_are_refused_with_the_json_path(tmp_path, capsys, payload, where):
    source = tmp_path / "in.json"
    source.write_text(json.dumps(payload))
    out = tmp_path / "landmarks.csv"
    assert main(["import-landmarks", str(source), "--out", str(out)]) == 2
    assert f"{source}: {where}" in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "1" * 40])
def test_non_finite_coordinates_are_refused(tmp_path, capsys, literal):
    source = tmp_path / "in.json"
    source.write_text('{"shapes": [{"label": "condyle_right", "points": [[' + literal + ', 2]]}]}')
    assert main(["import-landmarks", str(source), "--out", str(tmp_path / "l.csv")]) == 2
    assert str(source) in one_error_line(capsys) and not (tmp_path / "l.csv").exists()


# 9: the whole dataset is checked before `patches` writes anything; its output is replaced whole

def test_patches_writes_nothing_when_any_image_is_bad(small_png_cohort, tmp_path, capsys):
    data = shutil.copytree(small_png_cohort, tmp_path / "data")
    (data / "images" / "P002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(["patches", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "P002.png" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no out, no partial folder


def test_patches_replaces_its_own_output_and_refuses_a_foreign_folder(small_png_cohort, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["patches", str(small_png_cohort), "--out", str(out)]) == 0
    (out / "patches" / "stale").mkdir()
    assert main(["patches", str(small_png_cohort), "--out", str(out)]) == 0
    assert not (out / "patches" / "stale").exists()
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    assert main(["patches", str(small_png_cohort), "--out", str(foreign)]) == 2
    assert "already exists and is not empty" in one_error_line(capsys)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]


# 11: bad output locations are bad input

def unwritable_locations(tmp_path: Path) -> list[Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    locations = [a_file, a_file / "below-a-file"]
    if not os.access("/sys", os.W_OK) or not Path("/sys").is_dir():
        return locations
    try:
        (Path("/sys") / "osteoscreen-probe").mkdir()
    except OSError:
        locations.append(Path("/sys") / "osteoscreen-out")  # a folder even root cannot write
    return locations


@pytest.mark.parametrize("command", ["patches", "predict", "train", "import-landmarks", "cv", "synth"])
def test_an_unusable_out_is_exit_2_with_one_line(small_png_cohort, screening_model, tmp_path, capsys, command):
    labelme = tmp_path / "points.json"
    labelme.write_text(json.dumps({"shapes": [{**LABELME_POINT, "label": name} for name in
                                              ("condyle_right", "condyle_left", "angle_right", "angle_left",
                                               "premolar_right", "premolar_left", "tuberosity_right",
                                               "tuberosity_left")], "imagePath": "P001.png"}))
    for out in unwritable_locations(tmp_path):
        argv = {"patches": ["patches", str(small_png_cohort), "--out", str(out)],
                "predict": ["predict", str(screening_model), str(small_png_cohort), "--out", str(out)],
                "train": ["train", str(small_png_cohort), "--out", str(out), "--epochs", "1", "--views", "1"],
                "import-landmarks": ["import-landmarks", str(labelme), "--out", str(out)],
                "cv": ["cv", str(small_png_cohort), "--out", str(out), "--methods", "majority"],
                "synth": ["synth", str(out), "--n", "2", "--positives", "1"]}[command]
        if command == "import-landmarks" and out.name == "a-file":
            continue  # a file is what import-landmarks writes: replacing one is its job
        assert main(argv) == 2, out
        message = one_error_line(capsys)
        assert str(out) in message and "internal error" not in message


def test_import_landmarks_refuses_a_folder_as_out(tmp_path, capsys):
    source = tmp_path / "in.json"
    source.write_text(json.dumps({"shapes": []}))
    assert main(["import-landmarks", str(source), "--out", str(tmp_path)]) == 2
    assert "is a folder" in one_error_line(capsys)


# judgement calls

def test_two_subjects_sharing_an_image_warn_in_validate_and_are_refused_by_cv(small_png_cohort, tmp_path, capsys):
    data = shutil.copytree(small_png_cohort, tmp_path / "data")
    (data / "images" / "P002.png").unlink()
    (data / "images" / "P002.png").symlink_to("P001.png")  # another name, the same file
    rows = list(csv.reader(open(data / "landmarks.csv", newline="")))
    first = {row[1]: row[2:] for row in rows if row[0] == "P001"}
    with open(data / "landmarks.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([row[:2] + first[row[1]] if row[0] == "P002" else row for row in rows])
    assert main(["validate", str(data)]) == 0
    assert "osteoscreen: warning:" in capsys.readouterr().err
    assert main(["cv", str(data), "--out", str(tmp_path / "run"), "--methods", "majority"]) == 2
    assert "'P001', 'P002' share one image file" in one_error_line(capsys)


def test_predict_scores_every_subject_whatever_its_label_and_says_what_it_ignored(small_png_cohort, screening_model,
                                                                                  tmp_path, capsys):
    data = with_subject_ids(small_png_cohort, tmp_path / "data", ["P001", "P002", "P003", "P004"],
                            labels=["osteopenia", "Normal", "", "maybe"])
    rows = list(csv.DictReader(open(data / "subjects.csv", newline="")))
    rows[0]["t_score"], rows[1]["t_score"], rows[3]["t_score"] = "-1.8", "", ""  # osteopenia agrees with its T
    with open(data / "subjects.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert main(["predict", str(screening_model), str(data), "--out", str(tmp_path / "screen"), "--no-figures"]) == 0
    assert "unusable labels ignored ('maybe': 1)" in capsys.readouterr().err
    rows = list(csv.DictReader(open(tmp_path / "screen" / "predictions.csv")))
    assert [row["who_class"] for row in rows][:2] == ["osteopenia", "normal"] and rows[3]["who_class"] == ""
    assert [row["y_true"] for row in rows][:2] == ["", "normal"]  # the model's task excludes osteopenia
    assert all(0 <= float(row["p_osteoporosis"]) <= 1 for row in rows)


def test_a_second_predict_replaces_the_first_one_s_figures(small_png_cohort, screening_model, tmp_path):
    first = with_subject_ids(small_png_cohort, tmp_path / "first", ["A1", "A2", "A3", "A4"])
    second = with_subject_ids(small_png_cohort, tmp_path / "second", ["B1", "B2", "B3", "B4"])
    out = tmp_path / "screen"
    assert main(["predict", str(screening_model), str(first), "--out", str(out)]) == 0
    assert main(["predict", str(screening_model), str(second), "--out", str(out)]) == 0
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == ["B1", "B2", "B3", "B4"]


def test_a_mistyped_input_path_says_it_does_not_exist(screening_model, tmp_path, capsys):
    assert main(["predict", str(screening_model), str(tmp_path / "dta"), "--out", str(tmp_path / "o")]) == 2
    assert "no such dataset directory or image file" in one_error_line(capsys)


def test_train_writes_nothing_when_the_dataset_is_bad(small_png_cohort, tmp_path, capsys):
    data = shutil.copytree(small_png_cohort, tmp_path / "data")
    (data / "images" / "P003.png").write_bytes(b"junk")
    assert main(["train", str(data), "--out", str(tmp_path / "model"), "--epochs", "1", "--views", "1"]) == 2
    one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_exif_orientation_is_applied_when_reading(tmp_path):
    from osteoscreen.io.imageio import read_radiograph

    pixels = np.zeros((20, 40), np.uint8)
    pixels[:5, :10] = 255  # a bright block top-left as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    shown = read_radiograph(tmp_path / "rotated.jpg").pixels
    assert shown.shape == (40, 20)  # as a viewer shows it
    assert shown[:10, -5:].mean() > 0.8 and shown[:10, :5].mean() < 0.2  # the block is now top-right


def test_a_multipage_tiff_gives_its_first_page_with_a_warning(tmp_path):
    from osteoscreen.core.errors import InputWarning
    from osteoscreen.io.imageio import read_radiograph

    pages = [Image.fromarray(np.full((8, 8), value, np.uint8)) for value in (51, 204)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    with pytest.warns(InputWarning, match="pages.tif: holds 2 images"):
        pixels = read_radiograph(tmp_path / "pages.tif").pixels
    assert pixels == pytest.approx(np.full((8, 8), 0.2), abs=1e-6)


# numbers on the command line: finite and within range, else a usage error (exit 2), never an internal error

@pytest.mark.parametrize("argv", [
    ["patches", "DATA", "--out", "OUT", "--patch-mm", "nan"],
    ["patches", "DATA", "--out", "OUT", "--patch-mm", "inf"],
    ["patches", "DATA", "--out", "OUT", "--patch-px", "100000"],
    ["cv", "DATA", "--out", "OUT", "--seed", "-1"],
    ["cv", "DATA", "--out", "OUT", "--views", "1000000"],
    ["cv", "DATA", "--out", "OUT", "--backend", "ray", "--task-cpus", "nan"],
    ["serve", "--data", "DATA", "--max-upload-mb", "nan"],
    ["serve", "--data", "DATA", "--port", "99999"],
    ["synth", "OUT", "--n", "1e3"],
])
def test_out_of_range_or_non_finite_numbers_are_usage_errors(small_png_cohort, tmp_path, capsys, argv):
    argv = [str(small_png_cohort) if a == "DATA" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: argument --" in err and "expected" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_empty_seed_list_and_oversized_physical_patch_are_input_errors(small_png_cohort, tmp_path, capsys):
    assert main(["cv", str(small_png_cohort), "--out", str(tmp_path / "r"), "--methods", "majority",
                 "--seeds", ","]) == 2
    assert "--seeds" in one_error_line(capsys)
    assert main(["patches", str(small_png_cohort), "--out", str(tmp_path / "p"), "--patch-mm", "150"]) == 2
    assert "over the limit of 1024 px" in one_error_line(capsys)


def test_an_image_path_outside_the_dataset_is_never_read(small_png_cohort, tmp_path, capsys, monkeypatch):
    import osteoscreen.data.dataset

    data = shutil.copytree(small_png_cohort, tmp_path / "data")
    outside = tmp_path / "outside.png"
    shutil.copy(data / "images" / "P001.png", outside)
    (data / "subjects.csv").write_text((data / "subjects.csv").read_text().replace("images/P001.png",
                                                                                  "../outside.png"))
    read = []
    real = osteoscreen.data.dataset.read_radiograph
    monkeypatch.setattr(osteoscreen.data.dataset, "read_radiograph", lambda path: read.append(path) or real(path))
    assert main(["validate", str(data)]) == 2
    assert "leaves the dataset directory" in one_error_line(capsys)
    assert outside not in read and len(read) == 3


def test_a_float_image_with_nan_is_refused(tmp_path):
    from osteoscreen.core.errors import InputError
    from osteoscreen.io.imageio import read_radiograph

    pixels = np.zeros((8, 8), np.float32)
    pixels[3, 3] = np.nan
    Image.fromarray(pixels).save(tmp_path / "nan.tif")
    with pytest.raises(InputError, match="nan.tif: image holds values that are not finite"):
        read_radiograph(tmp_path / "nan.tif")


def test_serve_on_a_port_in_use_is_exit_2(small_png_cohort, capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--data", str(small_png_cohort), "--port", str(port)]) == 2
    assert f"--port {port}: cannot listen there" in one_error_line(capsys)
