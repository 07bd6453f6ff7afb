"""Landmarks from annotation tools into landmarks.csv: LabelMe point shapes and COCO keypoints.

- LabelMe: one JSON per radiograph; every landmark is a `point` shape whose label is a landmark name
  (condyle_right, ...); the subject id is the stem of `imagePath` (else of the JSON file).
- COCO keypoints: one JSON; the category's `keypoints` list names the landmarks; each annotation's
  `keypoints` is [x1, y1, v1, ...] with v = 0 meaning "not labelled"; the subject id is the stem of the image's
  `file_name`. COCO pixel coordinates put (0, 0) at the top-left corner of the top-left pixel; ours put it at
  the pixel's centre, so 0.5 is subtracted.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from osteoscreen.atomic import atomic_path
from osteoscreen.data.dataset import LANDMARK_COLUMNS, DatasetError
from osteoscreen.errors import InputError
from osteoscreen.landmarks import LANDMARKS
from osteoscreen.outputs import output_file

FORMATS = ("auto", "labelme", "coco")
Points = dict[str, dict[str, tuple[float, float]]]  # subject id -> landmark -> (x, y)


def _load_json(path: Path) -> dict:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(payload, dict):
        raise InputError(f"{path}: expected a JSON object")
    return payload


def detect_format(payload: dict) -> str:
    if "shapes" in payload:
        return "labelme"
    if "annotations" in payload and "images" in payload:
        return "coco"
    return "unknown"


def read_labelme(path: Path, payload: dict, problems: list[str]) -> Points:
    subject = Path(str(payload.get("imagePath") or Path(path).name).replace("\\", "/")).stem
    points: dict[str, tuple[float, float]] = {}
    for index, shape in enumerate(payload.get("shapes") or []):
        label = str(shape.get("label", "")).strip()
        where = f"{path}: shape {index} ({label!r})"
        if label not in LANDMARKS:
            problems.append(f"{where}: unknown landmark; expected one of {', '.join(LANDMARKS)}")
        elif shape.get("shape_type", "point") != "point" or len(shape.get("points") or []) != 1:
            problems.append(f"{where}: must be a single point, got a {shape.get('shape_type')!r} shape")
        elif label in points:
            problems.append(f"{where}: landmark {label} given twice")
        else:
            x, y = shape["points"][0]
            points[label] = (float(x), float(y))
    return {subject: points}


def read_coco(path: Path, payload: dict, problems: list[str]) -> Points:
    names = {category["id"]: category.get("keypoints") or [] for category in payload.get("categories") or []}
    images = {image["id"]: Path(str(image.get("file_name", image["id"]))).stem for image in payload["images"]}
    result: Points = {}
    for index, annotation in enumerate(payload["annotations"]):
        where = f"{path}: annotation {index}"
        image_id, keypoints = annotation.get("image_id"), annotation.get("keypoints") or []
        labels = names.get(annotation.get("category_id"), [])
        if image_id not in images:
            problems.append(f"{where}: image_id {image_id!r} is not in images")
            continue
        if len(keypoints) != 3 * len(labels):
            problems.append(f"{where}: {len(keypoints)} keypoint values for {len(labels)} keypoint names")
            continue
        unknown = [name for name in labels if name not in LANDMARKS]
        if unknown:
            problems.append(f"{where}: unknown keypoint name(s) {', '.join(unknown)}")
            continue
        points = result.setdefault(images[image_id], {})
        for name, (x, y, visible) in zip(labels, zip(*[iter(keypoints)] * 3, strict=True), strict=True):
            if visible:
                points[name] = (float(x) - 0.5, float(y) - 0.5)
    return result


def import_landmarks(files: list[Path], out: Path, fmt: str = "auto") -> int:
    """Convert annotation files into landmarks.csv at `out` (written whole or not at all); returns subjects."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = output_file(out)
    problems: list[str] = []
    subjects: Points = {}
    for path in map(Path, files):
        payload = _load_json(path)
        kind = detect_format(payload) if fmt == "auto" else fmt
        if kind == "unknown":
            problems.append(f"{path}: neither LabelMe (no 'shapes') nor COCO (no 'images'/'annotations')")
            continue
        for subject, points in (read_labelme if kind == "labelme" else read_coco)(path, payload, problems).items():
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
