"""Load a dataset directory (subjects.csv, landmarks.csv, images/) and report every problem in one pass."""

from __future__ import annotations

import csv
import hashlib
import math
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from osteoscreen.core.errors import InputError, InputWarning
from osteoscreen.core.landmarks import (
    DEFAULT_TASK,
    LANDMARKS,
    WHO_CLASSES,
    binary_label,
    check_task,
    sides_swapped,
    who_from_t_score,
    who_index,
)
from osteoscreen.core.utils import thread_map
from osteoscreen.io.imageio import PLAUSIBLE_SPACING_MM, Radiograph, read_radiograph
from osteoscreen.io.jsoninput import read_json

SUBJECT_COLUMNS = ("subject_id", "image", "label")
LANDMARK_COLUMNS = ("subject_id", "landmark", "x", "y")
MAX_LANDMARK_JSON_BYTES = 1 << 20


class DatasetError(InputError):
    """All problems found in a dataset, one line each (file, row, field, what was wrong)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class Subject:
    """One radiograph and its annotations.

    landmarks: [8, 2] float64 (x, y) pixel coordinates in LANDMARKS order; (0, 0) is the centre of the
    top-left pixel, x is the column. who: the WHO class index (0 normal, 1 osteopenia, 2 osteoporosis; from the
    label, or from the T-score where the label is empty) or None; label: the binary label of the dataset's task
    (1 positive, 0 negative; None when unlabelled or excluded by the task: osteopenia in the default task).
    spacing_mm: pixel size in mm from the image file, else from the CSV, else None.
    image_shape: (height, width) in pixels once the image has been checked.
    """

    subject_id: str
    image_path: Path
    label: int | None
    landmarks: np.ndarray
    spacing_mm: float | None = None
    image_shape: tuple[int, int] | None = None
    who: int | None = None  # WHO class index (landmarks.WHO_CLASSES); label is the binary one of a task
    age: float | None = None  # years, from subjects.csv
    sex: str | None = None  # "F" or "M", from subjects.csv
    #: When the landmarks were suggested by a landmark model (osteoscreen.landmarking): each one's confidence [8] in
    #: [0, 1] and why it is flagged ("" when it is not); None when they were annotated.
    landmark_confidence: np.ndarray | None = None
    landmark_flags: tuple[str, ...] | None = None

    def load_image(self) -> Radiograph:
        """Read the radiograph; the CSV spacing fills in where the file gives none."""
        radiograph = read_radiograph(self.image_path)
        if radiograph.spacing_mm is None and self.spacing_mm is not None:
            return Radiograph(radiograph.pixels, self.spacing_mm)
        return radiograph


@dataclass
class Dataset:
    root: Path
    subjects: list[Subject]

    @property
    def labels(self) -> np.ndarray:
        """[N] int labels (1 = osteoporosis); raises if a subject is unlabelled."""
        if any(s.label is None for s in self.subjects):
            raise InputError(f"{self.root}: some subjects have no label")
        return np.array([s.label for s in self.subjects], dtype=np.int64)

    def for_task(self, task: str) -> tuple[Dataset, dict[str, int]]:
        """The subjects a task uses, labelled for it (landmarks.TASKS), and how many of each WHO class it excluded
        ({class name: count}; unlabelled subjects are refused by `labels` as before, not excluded)."""
        check_task(task)
        kept, excluded = [], {}
        for subject in self.subjects:
            label = binary_label(subject.who, task)
            if subject.who is not None and label is None:
                excluded[WHO_CLASSES[subject.who]] = excluded.get(WHO_CLASSES[subject.who], 0) + 1
                continue
            kept.append(replace(subject, label=label))
        return Dataset(self.root, kept), excluded

    def summary(self) -> dict:
        """Identity and class counts, as runs and models record their data: path, hash, n, positives,
        negatives, synthetic (a phantom cohort written by `osteoscreen synth`)."""
        labels = self.labels
        return {"path": str(self.root), "hash": self.content_hash(), "n": len(labels),
                "positives": int(labels.sum()), "negatives": int(len(labels) - labels.sum()),
                "synthetic": (self.root / "phantom.json").exists()}

    def content_hash(self) -> str:
        """SHA-256 over both CSV files and every image's bytes: identifies the data a run used."""
        digest = hashlib.sha256()
        for name in ("subjects.csv", "landmarks.csv"):
            digest.update((self.root / name).read_bytes())
        for subject in self.subjects:
            with open(subject.image_path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()


def _read_csv(path: Path, required: tuple[str, ...], problems: list[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows as (line number, {column: stripped value}); a missing file or column, and every row with more fields
    than the header (reported with its line and, where a decimal comma is the likely cause, a hint), go into
    problems. A row with fewer fields has its missing fields empty."""
    if not path.is_file():
        problems.append(f"{path}: file not found")
        return []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in required if name not in header]
            if missing:
                hint = "; semicolon-separated? save it as comma-separated CSV" if ";" in ",".join(header) else ""
                problems.append(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header)}{hint})")
                return []
            rows = []
            for fields in reader:
                if not fields:
                    continue
                if len(fields) > len(header):
                    problems.append(f"{path}:{reader.line_num}: {len(fields)} fields, header has {len(header)}"
                                    f"{_extra_field_hint(fields)}")
                    continue
                rows.append((reader.line_num, {name: (fields[i].strip() if i < len(fields) else "")
                                               for i, name in enumerate(header)}))
            return rows
    except (UnicodeDecodeError, csv.Error) as error:
        problems.append(f"{path}: not a readable CSV file ({error})")
        return []


def _extra_field_hint(fields: list[str]) -> str:
    """Why a row may have too many fields: a decimal comma (digits, then digits) or an unquoted comma."""
    for first, second in zip(fields, fields[1:], strict=False):
        if re.fullmatch(r"\s*-?\d+", first) and re.fullmatch(r"\d+\s*", second):
            return (f" (a decimal comma, as in '{first.strip()},{second.strip()}'? write "
                    f"{first.strip()}.{second.strip()}, or quote the field)")
    return " (a trailing comma, or a comma inside an unquoted field? quote fields that hold commas)"


def _who_class(row: dict[str, str], where: str, require_labels: bool, ignore_unknown_labels: bool,
               ignored_labels: dict[str, int], problems: list[str]) -> int | None:
    """The row's WHO class index from `label`, or from `t_score` (WHO cut-offs) where the label is empty. An
    unknown label, a label that contradicts its T-score or a T-score that is not a number is a problem; with
    ignore_unknown_labels (prediction, which needs no label) it is counted in ignored_labels and the subject left
    unlabelled instead."""
    label, t_text = row.get("label", ""), row.get("t_score", "")

    def refuse(problem: str, key: str) -> None:
        if ignore_unknown_labels:
            ignored_labels[key] = ignored_labels.get(key, 0) + 1
        else:
            problems.append(f"{where}: {problem}")

    t_score = None
    if t_text:
        t_score = _parse_float(t_text)
        if t_score is None:
            refuse(f"field t_score: not a number {t_text!r}", f"t_score {t_text}")
            return None
        _warn_if_implausible(where, "t_score", t_score, PLAUSIBLE_T_SCORE)
    if not label:
        if t_score is not None:
            return who_from_t_score(t_score)
        if require_labels:
            problems.append(f"{where}: field label is empty and there is no t_score to derive it from")
        return None
    try:
        who = who_index(label)
    except ValueError:
        refuse(f"field label: unknown label {label!r} (expected {', '.join(WHO_CLASSES)})", label)
        return None
    if t_score is not None and who_from_t_score(t_score) != who:
        refuse(f"field label: {label!r} contradicts t_score {t_text} (WHO: {WHO_CLASSES[who_from_t_score(t_score)]}"
               "; normal T >= -1, osteoporosis T <= -2.5)", f"{label} with t_score {t_text}")
        return None
    return who


MAX_AGE = 130  # years: an age above it is a typing error
SEXES = {"f": "F", "female": "F", "w": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}


def parse_age(text: str) -> float | None:
    """An age in years in [0, MAX_AGE] from text; None when it is not one."""
    age = _parse_float(text)
    return age if age is not None and 0 <= age <= MAX_AGE else None


def parse_sex(text: str) -> str | None:
    """"F" or "M" from F, M, female, male (any case, surrounding spaces ignored); None otherwise."""
    return SEXES.get(text.strip().lower())


def checked_covariates(age: object, sex: object) -> tuple[float | None, str | None]:
    """A caller's age (years, a number or text) and sex (F, M, female, male; any case) -> (age, "F"/"M"), None for
    None; InputError naming the argument otherwise (what the CSV, the command line and the page accept)."""
    years = code = None
    if age is not None:
        years = parse_age(str(age)) if isinstance(age, str | int | float | np.number) and not isinstance(age, bool) \
            else None
        if years is None:
            raise InputError(f"age: expected years between 0 and {MAX_AGE}, got {age!r}")
    if sex is not None:
        code = parse_sex(sex) if isinstance(sex, str) else None
        if code is None:
            raise InputError(f"sex: expected F or M (or female, male), got {sex!r}")
    return years, code


def _covariates(row: dict[str, str], where: str, problems: list[str]) -> tuple[float | None, str | None]:
    """(age in years, sex "F"/"M") of a row; empty fields give None, values that are not an age in [0, MAX_AGE] or a
    sex (F, M, female, male; any case) are problems."""
    age = sex = None
    if row.get("age"):
        age = parse_age(row["age"])
        if age is None:
            problems.append(f"{where}: field age: not an age in years (0-{MAX_AGE}) {row['age']!r}")
    if row.get("sex"):
        sex = parse_sex(row["sex"])
        if sex is None:
            problems.append(f"{where}: field sex: expected F or M (or female, male), got {row['sex']!r}")
    return age, sex


def _parse_float(text: str) -> float | None:
    """A finite decimal number from text; None otherwise (Python's float also reads '-2_5' as -25: refused)."""
    if "_" in text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


#: Values outside these ranges are used, with a warning naming the row: likely typing or unit errors.
PLAUSIBLE_T_SCORE = (-8.0, 6.0)  # DXA T-scores beyond these are not seen in practice


def _warn_if_implausible(where: str, field: str, value: float | None, plausible: tuple[float, float]) -> None:
    if value is not None and not plausible[0] <= value <= plausible[1]:
        warnings.warn(f"{where}: field {field}: {value:g} is outside the plausible {plausible[0]:g} to "
                      f"{plausible[1]:g}; used as given (check it)", InputWarning, stacklevel=3)


def load_dataset(root: str | Path, *, check_images: bool = True, require_labels: bool = True,
                 require_landmarks: bool = True, ignore_unknown_labels: bool = False,
                 allow_shared_images: bool = True,
                 on_image: Callable[[Subject, Radiograph], None] | None = None,
                 progress: Callable[[Iterable], Iterable] = iter) -> Dataset:
    """Parse and validate a dataset directory (README "Dataset layout").

    check_images reads every image to check it decodes and that landmarks fall inside it; on_image(subject,
    radiograph) is then called (from the checking threads) with each radiograph that passed, so a caller that
    needs the pixels does not decode them again; an InputError it raises is one more problem. require_landmarks
    False (annotation): landmarks.csv may be absent and subjects may lack landmarks (left NaN).
    ignore_unknown_labels (prediction, which needs no label): a label that is neither class (osteopenia, say) is
    left None, with a warning. Subjects that share one image file get a warning, or are a problem when
    allow_shared_images is False (cross-validation: it would leak across folds). Warnings are issued as
    InputWarning; all problems are collected and raised together as one DatasetError.
    """
    root = Path(root)
    problems: list[str] = []
    if not root.is_dir():
        raise DatasetError([f"{root}: dataset directory not found"])
    subjects_csv, landmarks_csv = root / "subjects.csv", root / "landmarks.csv"
    subject_rows = _read_csv(subjects_csv, SUBJECT_COLUMNS if require_labels else SUBJECT_COLUMNS[:2], problems)
    landmark_rows = (_read_csv(landmarks_csv, LANDMARK_COLUMNS, problems)
                     if require_landmarks or landmarks_csv.exists() else [])
    subjects, usable_images, ignored_labels = _read_subjects(root, subjects_csv, subject_rows, require_labels,
                                                             ignore_unknown_labels, problems)
    _read_landmarks(landmarks_csv, landmark_rows, subjects, bool(subject_rows), require_landmarks, problems)
    if not subjects and subject_rows == [] and not problems:
        problems.append(f"{subjects_csv}: no subjects")
    if check_images:
        readable = [s for s in subjects.values() if s.subject_id in usable_images]
        for found in thread_map(lambda subject: _check_image(subject, landmarks_csv, on_image), readable, progress):
            problems.extend(found)
    _check_shared_images(subjects_csv, subjects, allow_shared_images, problems)
    if problems:
        raise DatasetError(problems)
    if ignored_labels:
        counts = ", ".join(f"{label!r}: {n}" for label, n in ignored_labels.items())
        warnings.warn(f"{subjects_csv}: unusable labels ignored ({counts}); those "
                      "subjects are screened without a true class", InputWarning, stacklevel=2)
    return Dataset(root, list(subjects.values()))


def _read_subjects(root: Path, subjects_csv: Path, rows: list[tuple[int, dict[str, str]]], require_labels: bool,
                   ignore_unknown_labels: bool, problems: list[str]
                   ) -> tuple[dict[str, Subject], set[str], dict[str, int]]:
    """subjects.csv's rows -> ({subject_id: Subject with NaN landmarks}, the ids whose image is a file inside the
    dataset, {ignored label: count}); each bad field is a problem naming its line."""
    subjects: dict[str, Subject] = {}
    ignored_labels: dict[str, int] = {}
    usable_images: set[str] = set()
    for line, row in rows:
        where = f"{subjects_csv}:{line}"
        sid = row.get("subject_id", "")
        if not sid:
            problems.append(f"{where}: field subject_id is empty")
            continue
        if sid in subjects:
            problems.append(f"{where}: field subject_id: duplicate subject {sid!r}")
            continue
        who = _who_class(row, where, require_labels, ignore_unknown_labels, ignored_labels, problems)
        spacing = _spacing(row, where, problems)
        image_path, usable = _image_path(root, row.get("image", ""), where, problems)
        if usable:
            usable_images.add(sid)
        age, sex = _covariates(row, where, problems)
        subjects[sid] = Subject(sid, image_path, binary_label(who, DEFAULT_TASK),
                                np.full((len(LANDMARKS), 2), np.nan), spacing, who=who, age=age, sex=sex)
    return subjects, usable_images, ignored_labels


def _spacing(row: dict[str, str], where: str, problems: list[str]) -> float | None:
    """The row's pixel_spacing_mm (None when empty or not a positive number, the latter a problem)."""
    if not row.get("pixel_spacing_mm"):
        return None
    spacing = _parse_float(row["pixel_spacing_mm"])
    if spacing is None or spacing <= 0:
        problems.append(f"{where}: field pixel_spacing_mm: not a positive number {row['pixel_spacing_mm']!r}")
        spacing = None
    _warn_if_implausible(where, "pixel_spacing_mm", spacing, PLAUSIBLE_SPACING_MM)
    return spacing


def _image_path(root: Path, image: str, where: str, problems: list[str]) -> tuple[Path, bool]:
    """The image field resolved against the dataset, and whether it is a file inside it (else a problem)."""
    image_path = (root / image).resolve()
    if not image:
        problems.append(f"{where}: field image is empty")
    elif not image_path.is_relative_to(root.resolve()):
        problems.append(f"{where}: field image: path {image!r} leaves the dataset directory")
    elif not image_path.is_file():
        problems.append(f"{where}: field image: file not found {image!r}")
    else:
        return image_path, True
    return image_path, False


def _read_landmarks(landmarks_csv: Path, rows: list[tuple[int, dict[str, str]]], subjects: dict[str, Subject],
                    have_subjects: bool, require_landmarks: bool, problems: list[str]) -> None:
    """landmarks.csv's rows into the subjects' landmarks [8, 2] px; unknown subjects or landmarks, duplicates,
    bad coordinates and (when required) a subject's missing landmarks are problems."""
    seen: set[tuple[str, str]] = set()
    for line, row in rows:
        where = f"{landmarks_csv}:{line}"
        sid, name = row.get("subject_id", ""), row.get("landmark", "")
        if sid not in subjects:
            if have_subjects:
                problems.append(f"{where}: field subject_id: subject {sid!r} is not in subjects.csv")
            continue
        if name not in LANDMARKS:
            problems.append(f"{where}: field landmark: unknown landmark {name!r} (expected one of "
                            f"{', '.join(LANDMARKS)})")
            continue
        if (sid, name) in seen:
            problems.append(f"{where}: field landmark: duplicate landmark {name!r} for subject {sid!r}")
            continue
        seen.add((sid, name))
        coords = [_parse_float(row.get(axis, "")) for axis in ("x", "y")]
        for axis, value in zip(("x", "y"), coords, strict=True):
            if value is None:
                problems.append(f"{where}: field {axis}: not a number {row.get(axis, '')!r}")
        if None not in coords:
            subjects[sid].landmarks[LANDMARKS.index(name)] = coords
    for sid, subject in subjects.items():
        missing = [LANDMARKS[i] for i in range(len(LANDMARKS))
                   if np.isnan(subject.landmarks[i]).any() and (sid, LANDMARKS[i]) not in seen]
        if missing and rows and require_landmarks:
            problems.append(f"{landmarks_csv}: subject {sid!r}: missing landmark(s) {', '.join(missing)}")
    _warn_if_sides_swapped(landmarks_csv, subjects)


def _warn_if_sides_swapped(landmarks_csv: Path, subjects: dict[str, Subject]) -> None:
    """One warning for the subjects whose right and left landmarks lie the viewer's way round (sides_swapped)."""
    swapped = {sid: groups for sid, subject in subjects.items() if (groups := sides_swapped(subject.landmarks))}
    if swapped:
        sid, groups = next(iter(swapped.items()))
        warnings.warn(f"{landmarks_csv}: in {len(swapped)} of {len(subjects)} subject(s) a _right landmark lies "
                      f"right of its _left twin (first: {sid!r}, {', '.join(groups)}); landmark sides are the "
                      "patient's, on the image's left for the patient's right: check that they are not named from "
                      "the viewer's side, or that the image is not stored mirrored", InputWarning, stacklevel=3)


def _check_shared_images(subjects_csv: Path, subjects: dict[str, Subject], allow: bool, problems: list[str]) -> None:
    """Subjects that share one image file: a warning, or a problem where `allow` is False (cross-validation)."""
    by_image: dict[Path, list[str]] = {}
    for subject in subjects.values():
        by_image.setdefault(subject.image_path, []).append(subject.subject_id)
    for ids in (ids for ids in by_image.values() if len(ids) > 1):
        shared = f"{subjects_csv}: field image: subjects {', '.join(map(repr, ids))} share one image file"
        if allow:
            warnings.warn(f"{shared} (cv refuses this: it would leak across folds)", InputWarning, stacklevel=3)
        else:
            problems.append(f"{shared}; cross-validation would put one radiograph in training and test folds")


def _check_image(subject: Subject, landmarks_csv: Path, on_image: Callable | None = None) -> list[str]:
    try:
        radiograph = subject.load_image()
    except InputError as error:
        return [f"subject {subject.subject_id!r}: {error}"]
    height, width = subject.image_shape = radiograph.pixels.shape
    subject.spacing_mm = radiograph.spacing_mm
    problems = []
    for name, (x, y) in zip(LANDMARKS, subject.landmarks, strict=True):
        if not (np.isnan(x) or np.isnan(y)) and not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
            problems.append(f"{landmarks_csv}: subject {subject.subject_id!r}: landmark {name} at "
                            f"({x:g}, {y:g}) lies outside the {width}x{height} image")
    if on_image is not None and not problems:
        try:
            on_image(subject, radiograph)
        except InputError as error:  # what the caller found in the pixels (no contrast, say), with the others
            problems.append(str(error))
    return problems


def read_landmark_file(path: Path) -> dict[str, tuple[float, float]]:
    """One radiograph's landmarks from CSV rows `landmark,x,y` (with that header) or JSON {name: [x, y]}.

    Returns {landmark: (x, y)} for all 8 landmarks; every problem (unknown, missing, duplicate, non-numeric)
    is reported with the file, and the row for CSV.
    """
    path = Path(path)
    problems: list[str] = []
    found: dict[str, tuple[float, float]] = {}
    if path.suffix.lower() == ".json":
        document = read_json(path, max_bytes=MAX_LANDMARK_JSON_BYTES)
        if not isinstance(document.value, dict):
            raise InputError(f"{path}: expected a JSON object {{landmark: [x, y]}}")
        rows = [(f"key {name!r}", name, value) for name, value in document.value.items()]
    else:
        parsed = _read_csv(path, ("landmark", "x", "y"), problems)
        rows = [(f"line {line}", row["landmark"], (row["x"], row["y"])) for line, row in parsed]
    for where, name, value in rows:
        point = [_parse_float(str(v)) for v in value] if isinstance(value, list | tuple) else []
        if name not in LANDMARKS:
            problems.append(f"{path}: {where}: unknown landmark {name!r}; expected one of {', '.join(LANDMARKS)}")
        elif name in found:
            problems.append(f"{path}: {where}: landmark {name} given twice")
        elif len(point) != 2 or None in point:
            problems.append(f"{path}: {where}: landmark {name} needs two numbers x, y, got {value!r}")
        else:
            found[name] = (point[0], point[1])
    missing = [name for name in LANDMARKS if name not in found]
    if missing and not problems:
        problems.append(f"{path}: missing landmark(s) {', '.join(missing)}")
    if problems:
        raise DatasetError(problems)
    return found


def single_image_dataset(image: str | Path, landmarks_file: str | Path) -> Dataset:
    """A one-subject, unlabelled dataset from an image file and its landmark file; the image's file name
    (without suffix) is the subject id. The image is read and the landmarks checked against its size."""
    image, landmarks_file = Path(image), Path(landmarks_file)
    if not image.is_file():
        raise InputError(f"{image}: image file not found")
    points = read_landmark_file(landmarks_file)
    subject = Subject(image.stem, image, None, np.array([points[name] for name in LANDMARKS], dtype=np.float64))
    problems = _check_image(subject, landmarks_file)
    if problems:
        raise DatasetError(problems)
    return Dataset(image.parent, [subject])
