"""Landmarks from annotation tools into landmarks.csv: LabelMe point shapes and COCO keypoints.

- LabelMe: one JSON per radiograph; every landmark is a `point` shape whose label is a landmark name
  (condyle_right, ...); the subject id is the stem of `imagePath` (else of the JSON file).
- COCO keypoints: one JSON; the category's `keypoints` list names the landmarks; each annotation's
  `keypoints` is [x1, y1, v1, ...] with v = 0 meaning "not labelled"; the subject id is the stem of the image's
  `file_name`. COCO pixel coordinates put (0, 0) at the top-left corner of the top-left pixel; ours put it at
  the pixel's centre, so 0.5 is subtracted.
A file whose structure differs (a member missing or of the wrong type, a coordinate that is not a finite
number) is refused with the file and the JSON path of the problem (`$.shapes[2].points[0][1]`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.data.dataset import LANDMARK_COLUMNS, DatasetError
from osteoscreen.io.jsoninput import JsonValue, read_json
from osteoscreen.io.outputs import atomic_path, output_file

FORMATS = ("auto", "labelme", "coco")
Points = dict[str, dict[str, tuple[float, float]]]  # subject id -> landmark -> (x, y)


def detect_format(document: JsonValue) -> str:
    if document.has("shapes"):
        return "labelme"
    if document.has("annotations") and document.has("images"):
        return "coco"
    return "unknown"


def _stem(name: str) -> str:
    return Path(name.replace("\\", "/")).stem


def read_labelme(document: JsonValue, problems: list[str]) -> Points:
    image_path = document.get("imagePath")
    subject = _stem(image_path.string() if image_path else Path(document.source).name)
    points: dict[str, tuple[float, float]] = {}
    shapes = document.get("shapes")
    for shape in shapes.elements() if shapes else []:
        label = shape["label"].string().strip()
        kind = shape.get("shape_type")
        kind = kind.string() if kind else "point"
        where = f"{shape.source}: {shape.path} ({label!r})"
        coordinates = shape["points"].elements()
        if label not in LANDMARKS:
            problems.append(f"{where}: unknown landmark; expected one of {', '.join(LANDMARKS)}")
        elif kind != "point" or len(coordinates) != 1:
            problems.append(f"{where}: must be a single point, got a {kind!r} shape with {len(coordinates)} points")
        elif label in points:
            problems.append(f"{where}: landmark {label} given twice")
        else:
            x, y = (value.number() for value in coordinates[0].elements(2))
            points[label] = (x, y)
    return {subject: points}


def _identifier(value: JsonValue) -> int | str:
    """A COCO id: an integer or a string."""
    return value.value if isinstance(value.value, str) else value.integer()


def read_coco(document: JsonValue, problems: list[str]) -> Points:
    categories = document.get("categories")
    names: dict[int | str, list[str]] = {}
    for category in categories.elements() if categories else []:
        keypoints = category.get("keypoints")
        names[_identifier(category["id"])] = [name.string() for name in keypoints.elements()] if keypoints else []
    images = {_identifier(image["id"]): _stem(image["file_name"].string()) for image in document["images"].elements()}
    result: Points = {}
    for annotation in document["annotations"].elements():
        where = f"{annotation.source}: {annotation.path}"
        image_id = _identifier(annotation["image_id"])
        category = annotation.get("category_id")
        labels = names.get(_identifier(category), []) if category else []
        keypoints = annotation.get("keypoints")
        values = keypoints.elements() if keypoints else []
        if image_id not in images:
            problems.append(f"{where}: image_id {image_id!r} is not in images")
            continue
        if len(values) != 3 * len(labels):
            problems.append(f"{where}: {len(values)} keypoint values for {len(labels)} keypoint names")
            continue
        unknown = [name for name in labels if name not in LANDMARKS]
        if unknown:
            problems.append(f"{where}: unknown keypoint name(s) {', '.join(unknown)}")
            continue
        points = result.setdefault(images[image_id], {})
        for index, name in enumerate(labels):
            x, y, visible = values[3 * index: 3 * index + 3]
            if visible.number(0, 2):
                points[name] = (x.number() - 0.5, y.number() - 0.5)
    return result


def import_landmarks(files: list[Path], out: Path, fmt: str = "auto") -> int:
    """Convert annotation files into landmarks.csv at `out` (written whole or not at all); returns subjects."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = output_file(out)
    problems: list[str] = []
    subjects: Points = {}
    for path in map(Path, files):
        document = read_json(path)
        document.object()
        kind = detect_format(document) if fmt == "auto" else fmt
        if kind == "unknown":
            problems.append(f"{path}: neither LabelMe (no 'shapes') nor COCO (no 'images'/'annotations')")
            continue
        for subject, points in (read_labelme if kind == "labelme" else read_coco)(document, problems).items():
            if subject in subjects:
                problems.append(f"{path}: subject {subject!r} already annotated in an earlier file")
            subjects[subject] = points
    for subject, points in subjects.items():
        missing = [name for name in LANDMARKS if name not in points]
        if missing:
            problems.append(f"subject {subject!r}: missing landmark(s) {', '.join(missing)}")
    if problems:
        raise DatasetError(problems)
    with atomic_path(Path(out)) as partial, open(partial, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(LANDMARK_COLUMNS)
        for subject, points in subjects.items():
            for name in LANDMARKS:
                writer.writerow([subject, name, f"{points[name][0]:.2f}", f"{points[name][1]:.2f}"])
    return len(subjects)
