import csv
import shutil

import numpy as np
import pytest

from osteoscreen.cli import main
from osteoscreen.core.errors import InputWarning
from osteoscreen.data.dataset import DatasetError, load_dataset


@pytest.fixture
def cohort(tmp_path, small_png_cohort):
    """A writable copy of the small PNG cohort."""
    return shutil.copytree(small_png_cohort, tmp_path / "data")


def edit(path, old, new, count=1):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def test_loads_a_valid_cohort(small_png_cohort):
    dataset = load_dataset(small_png_cohort)
    assert [s.subject_id for s in dataset.subjects] == ["P001", "P002", "P003", "P004"]
    assert dataset.labels.sum() == 2
    subject = dataset.subjects[0]
    assert subject.landmarks.shape == (8, 2) and not np.isnan(subject.landmarks).any()
    assert subject.image_shape is not None and 0.05 < subject.spacing_mm < 0.2
    assert len(dataset.content_hash()) == 64


BREAKAGES = {
    "duplicate subject": (
        "subjects.csv", "P002,images/P002.png", "P001,images/P002.png", "subjects.csv:3: field subject_id: duplicate"),
    "unknown label": ("subjects.csv", "osteoporosis", "osteopaenia", "field label: unknown label 'osteopaenia'"),
    "label contradicting its T-score": ("subjects.csv", "osteoporosis", "normal",
                                        "field label: 'normal' contradicts t_score"),
    "missing image": ("subjects.csv", "images/P001.png", "images/nope.png", "field image: file not found"),
    "image outside the dataset": ("subjects.csv", "images/P001.png", "../escape.png", "leaves the dataset"),
    "subject missing from subjects.csv": ("landmarks.csv", "P004,", "P009,", "subject 'P009' is not in subjects.csv"),
    "unknown landmark": ("landmarks.csv", "condyle_left", "condyle_middle", "unknown landmark 'condyle_middle'"),
    "non-numeric coordinate": ("landmarks.csv", "P002,angle_right,", "P002,angle_right,abc", "field x: not a number"),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_each_problem_is_reported_with_file_row_and_field(cohort, case):
    file, old, new, message = BREAKAGES[case]
    edit(cohort / file, old, new)
    with pytest.raises(DatasetError) as caught:
        load_dataset(cohort)
    assert any(message in line and file in line for line in caught.value.problems), caught.value.problems


def test_missing_and_duplicate_landmarks(cohort):
    lines = (cohort / "landmarks.csv").read_text().splitlines()
    target = next(line for line in lines if line.startswith("P003,premolar_left"))
    lines.remove(target)
    lines.append(next(line for line in lines if line.startswith("P001,angle_left")))
    (cohort / "landmarks.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(cohort)
    problems = caught.value.problems
    assert any("subject 'P003': missing landmark(s) premolar_left" in p for p in problems)
    assert any("duplicate landmark 'angle_left' for subject 'P001'" in p for p in problems)


def test_out_of_image_landmark(cohort):
    lines = (cohort / "landmarks.csv").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("P002,tuberosity_right"))
    lines[index] = "P002,tuberosity_right,-40.0,10.0"
    (cohort / "landmarks.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="landmark tuberosity_right at \\(-40, 10\\) lies outside"):
        load_dataset(cohort)


def test_unreadable_image(cohort):
    (cohort / "images" / "P003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DatasetError, match="subject 'P003'.*P003.png: cannot read image"):
        load_dataset(cohort)


def test_all_problems_in_one_pass(cohort):
    edit(cohort / "subjects.csv", "osteoporosis", "sick")
    edit(cohort / "landmarks.csv", "condyle_left", "condyle_middle")
    (cohort / "images" / "P004.png").unlink()
    with pytest.raises(DatasetError) as caught:
        load_dataset(cohort)
    assert len(caught.value.problems) >= 4  # label, unknown + hence missing landmark, missing image


def test_missing_files_and_columns(tmp_path):
    with pytest.raises(DatasetError, match="dataset directory not found"):
        load_dataset(tmp_path / "none")
    (tmp_path / "subjects.csv").write_text("id,image\nA,a.png\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path)
    assert any("missing column(s) subject_id, label" in p for p in caught.value.problems)
    assert any("landmarks.csv: file not found" in p for p in caught.value.problems)


def test_validate_cli_prints_one_line_per_problem_and_exits_2(cohort, capsys):
    edit(cohort / "subjects.csv", "osteoporosis", "sick")
    edit(cohort / "landmarks.csv", "P002,angle_right,", "P002,angle_right,abc")
    assert main(["validate", str(cohort)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("osteoscreen: error: ") for line in err)
    assert "Traceback" not in "".join(err)


def test_validate_cli_summary(small_png_cohort, capsys):
    assert main(["validate", str(small_png_cohort)]) == 0
    out = capsys.readouterr().out
    assert "4 subjects: 2 normal, 2 osteoporosis" in out and "pixel spacing:" in out and "image sizes" in out


def with_labels(source, out, labels_and_t_scores):
    """A copy of the dataset whose subjects get the given (label, t_score) pairs."""
    shutil.copytree(source, out)
    rows = list(csv.DictReader(open(out / "subjects.csv", newline="")))
    for row, (label, t_score) in zip(rows, labels_and_t_scores, strict=True):
        row["label"], row["t_score"] = label, t_score
    with open(out / "subjects.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_three_who_classes_labels_from_t_scores_and_tasks(small_png_cohort, tmp_path):
    data = with_labels(small_png_cohort, tmp_path / "data",
                       [("osteopenia", "-1.8"), ("", "-2.5"), ("", "-1.0"), ("Normal", "")])
    dataset = load_dataset(data)
    assert [s.who for s in dataset.subjects] == [1, 2, 0, 0]  # T = -2.5 is osteoporosis, T = -1.0 normal
    paper, excluded = dataset.for_task("osteoporosis-vs-normal")
    assert [s.subject_id for s in paper.subjects] == ["P002", "P003", "P004"] and excluded == {"osteopenia": 1}
    assert paper.labels.tolist() == [1, 0, 0]
    assert dataset.for_task("osteoporosis-vs-rest")[0].labels.tolist() == [0, 1, 0, 0]
    assert dataset.for_task("low-bmd-vs-normal")[0].labels.tolist() == [1, 1, 0, 0]


def test_bad_t_scores_are_reported_and_prediction_ignores_them(small_png_cohort, tmp_path):
    data = with_labels(small_png_cohort, tmp_path / "data",
                       [("", "minus two"), ("", ""), ("osteoporosis", "0.5"), ("normal", "")])
    with pytest.raises(DatasetError) as caught:
        load_dataset(data)
    problems = caught.value.problems
    assert any("subjects.csv:2: field t_score: not a number 'minus two'" in p for p in problems), problems
    assert any("subjects.csv:3: field label is empty and there is no t_score" in p for p in problems), problems
    assert any("subjects.csv:4: field label: 'osteoporosis' contradicts t_score 0.5" in p for p in problems)
    with pytest.warns(InputWarning, match="unusable labels ignored"):
        lenient = load_dataset(data, require_labels=False, ignore_unknown_labels=True)
    assert [s.who for s in lenient.subjects] == [None, None, None, 0]


def test_right_and_left_named_the_viewers_way_round_are_warned_about_once(cohort, recwarn):
    load_dataset(cohort)
    assert not [w for w in recwarn if "lies right of its _left twin" in str(w.message)]  # the phantom's convention
    path = cohort / "landmarks.csv"
    rows = list(csv.reader(path.open()))
    for row in rows[1:]:
        if row[0] in ("P001", "P003") and row[1].startswith(("condyle", "angle")):
            row[1] = row[1].replace("_right", "_TMP").replace("_left", "_right").replace("_TMP", "_left")
    with path.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    with pytest.warns(InputWarning) as caught:
        dataset = load_dataset(cohort)
    (warning,) = [str(w.message) for w in caught if "_left twin" in str(w.message)]
    assert "in 2 of 4 subject(s) a _right landmark lies right of its _left twin (first: 'P001', condyle, angle)" \
        in warning
    assert dataset.subjects[0].landmarks[0, 0] > dataset.subjects[0].landmarks[1, 0]  # read as given, not changed
