"""Landmarks from the page: checking a submitted set, and a dataset's landmarks.csv kept up to date.

`AnnotationStore` reads a dataset directory leniently (landmarks may be missing: that is what annotation is for)
and rewrites landmarks.csv after every saved subject: the previous file is first copied to
landmarks.csv.<UTC time>.bak (the newest 10 are kept), then the new one replaces it atomically (written to a
sibling, flushed to disk, renamed), so a crash leaves either the old or the new file and never loses a subject
saved before it. The file is read again before each save, so hand edits of other subjects' rows made while the
server runs are kept; one server at a time annotates a dataset (an OS lock on its folder).
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import threading
import weakref
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.data.dataset import LANDMARK_COLUMNS, Subject, load_dataset
from osteoscreen.io.outputs import atomic_path, lock_folder
from osteoscreen.web.uploads import UploadError

#: Backups of landmarks.csv kept: one per save, the newest this many.
BACKUPS = 10


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
    """The subjects of a dataset directory and their landmarks, saved to its landmarks.csv subject by subject.

    A save rewrites only the saved subject's x and y: every other row keeps its text as read, and columns the
    tool does not use (an `annotator` column, say) keep their values (empty on rows it adds)."""

    def __init__(self, root: str | Path):
        dataset = load_dataset(root, check_images=False, require_labels=False, require_landmarks=False)
        self.root, self.subjects = dataset.root, dataset.subjects
        self.path = self.root / "landmarks.csv"
        descriptor = lock_folder(self.root, "this dataset's landmarks.csv (an annotation server)")
        # released when the store is closed or dropped (and by the OS when the process ends)
        self.close = weakref.finalize(self, os.close, descriptor) if descriptor is not None else lambda: None
        self.header, self.rows = self._read()
        self._lock = threading.Lock()

    def _read(self) -> tuple[list[str], list[list[str]]]:
        """landmarks.csv's header and rows as they are on disk now (the LANDMARK_COLUMNS header and no rows if
        absent). UploadError (409) when the file lacks a column the tool writes (someone is editing it)."""
        if not self.path.exists():
            return list(LANDMARK_COLUMNS), []
        with open(self.path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])] or list(LANDMARK_COLUMNS)
            rows = [fields + [""] * (len(header) - len(fields)) for fields in reader if fields]
        missing = [name for name in LANDMARK_COLUMNS if name not in header]
        if missing:
            raise UploadError(409, f"{self.path.name} on disk has no column {', '.join(missing)} now (is someone "
                              "editing it?); nothing was saved: fix the file, then save again")
        return header, rows

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

    def _updated_rows(self, subject: Subject, points: np.ndarray) -> list[list[str]]:
        """The file's rows (self.rows, as just read) with the subject's 8 landmarks set to points ([8, 2]): rows
        it has are updated in place, missing ones appended."""
        column = {name: self.header.index(name) for name in LANDMARK_COLUMNS}
        rows = [list(fields) for fields in self.rows]
        where = {(fields[column["subject_id"]].strip(), fields[column["landmark"]].strip()): fields for fields in rows}
        for name, (x, y) in zip(LANDMARKS, points, strict=True):
            fields = where.get((subject.subject_id, name))
            if fields is None:
                fields = [""] * len(self.header)
                fields[column["subject_id"]], fields[column["landmark"]] = subject.subject_id, name
                rows.append(fields)
            fields[column["x"]], fields[column["y"]] = f"{x:.2f}", f"{y:.2f}"
        return rows

    def _back_up(self) -> None:
        """Copy landmarks.csv to landmarks.csv.<UTC time>.bak; keep the newest BACKUPS of them."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        backup = self.path.with_name(f"{self.path.name}.{stamp}.bak")
        with atomic_path(backup) as partial:
            shutil.copyfile(self.path, partial)
        for old in sorted(self.path.parent.glob(f"{self.path.name}.*.bak"))[:-BACKUPS]:
            old.unlink(missing_ok=True)

    def save(self, subject: Subject, points: np.ndarray) -> None:
        """Set one subject's 8 landmarks ([8, 2]) and rewrite landmarks.csv (backup first, then atomically). The
        file is read again first, so rows edited on disk since (by hand, by another tool) are kept: only the saved
        subject's rows change."""
        with self._lock:
            self.header, self.rows = self._read()
            rows = self._updated_rows(subject, points)
            if self.path.exists():
                self._back_up()
            with atomic_path(self.path) as partial:
                with open(partial, "w", newline="", encoding="utf-8") as handle:
                    writer = csv.writer(handle, lineterminator="\n")
                    writer.writerow(self.header)
                    writer.writerows(rows)
                    handle.flush()
                    os.fsync(handle.fileno())
            self.rows = rows
            subject.landmarks[:] = points
