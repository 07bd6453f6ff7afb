"""Landmarks from the page: checking a submitted set, and a dataset's landmarks.csv kept up to date.

`AnnotationStore` reads a dataset directory leniently (landmarks may be missing: that is what annotation is for)
and rewrites landmarks.csv after every saved subject: the previous file is first copied to landmarks.csv.bak,
then the new one replaces it atomically (written to a sibling, flushed to disk, renamed), so a crash leaves
either the old or the new file and never loses a subject saved before it.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from osteoscreen.atomic import atomic_path
from osteoscreen.data.dataset import Subject, load_dataset
from osteoscreen.landmarks import LANDMARKS
from osteoscreen.web.uploads import UploadError


def parse_landmarks(payload: object, width: int, height: int) -> np.ndarray:
    """{name: [x, y]} for all 8 landmarks inside a width x height image -> [8, 2] in LANDMARKS order.
    UploadError (422) names the first problem: not an object, unknown, missing, not two numbers, outside."""
    if not isinstance(payload, dict):
        raise UploadError(422, "landmarks: expected an object {landmark: [x, y]}")
    unknown = sorted(set(payload) - set(LANDMARKS))
    if unknown:
        raise UploadError(422, f"landmarks: unknown landmark(s) {', '.join(map(str, unknown))}")
    missing = [name for name in LANDMARKS if name not in payload]
    if missing:
        raise UploadError(422, f"landmarks: missing {', '.join(missing)}")
    points = np.empty((len(LANDMARKS), 2))
    for row, name in enumerate(LANDMARKS):
        value = payload[name]
        if not (isinstance(value, list | tuple) and len(value) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise UploadError(422, f"landmarks: {name} must be [x, y] numbers, got {value!r}"[:200])
        x, y = value
        if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
            raise UploadError(422, f"landmarks: {name} at ({x:g}, {y:g}) lies outside the {width}x{height} image")
        points[row] = value
    return points


class AnnotationStore:
    """The subjects of a dataset directory and their landmarks, saved to its landmarks.csv subject by subject."""

    def __init__(self, root: str | Path):
        dataset = load_dataset(root, check_images=False, require_labels=False, require_landmarks=False)
        self.root, self.subjects = dataset.root, dataset.subjects
        self.path = self.root / "landmarks.csv"
        self.backup = self.root / "landmarks.csv.bak"
        self._lock = threading.Lock()

    def subject(self, index: int) -> Subject | None:
        return self.subjects[index] if 0 <= index < len(self.subjects) else None

    def overview(self) -> list[dict]:
        """Per subject, in dataset order: index, id and how many landmarks are placed."""
        return [{"index": i, "subject_id": s.subject_id, "placed": int((~np.isnan(s.landmarks).any(axis=1)).sum())}
                for i, s in enumerate(self.subjects)]

    @staticmethod
    def landmarks(subject: Subject) -> dict[str, list[float] | None]:
        return {name: None if np.isnan(point).any() else [float(point[0]), float(point[1])]
                for name, point in zip(LANDMARKS, subject.landmarks, strict=True)}

    def save(self, subject: Subject, points: np.ndarray) -> None:
        """Set one subject's 8 landmarks ([8, 2]) and rewrite landmarks.csv (backup first, then atomically)."""
        with self._lock:
            previous = subject.landmarks.copy()
            subject.landmarks[:] = points
            try:
                if self.path.exists():
                    with atomic_path(self.backup) as partial:
                        shutil.copyfile(self.path, partial)
                with atomic_path(self.path) as partial:
                    with open(partial, "w", newline="", encoding="utf-8") as handle:
                        writer = csv.writer(handle, lineterminator="\n")
                        writer.writerow(["subject_id", "landmark", "x", "y"])
                        for other in self.subjects:
                            for name, (x, y) in zip(LANDMARKS, other.landmarks, strict=True):
                                if not (np.isnan(x) or np.isnan(y)):
                                    writer.writerow([other.subject_id, name, f"{x:.2f}", f"{y:.2f}"])
                        handle.flush()
                        os.fsync(handle.fileno())
            except OSError:
                subject.landmarks[:] = previous
                raise
