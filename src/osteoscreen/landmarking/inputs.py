"""Radiographs to suggest landmarks for, and the suggestions written as a landmarks.csv.

An input is one image file, a dataset directory (its subjects.csv names the images; a landmarks.csv there is
ignored for suggestion and, for `predict --suggest`, used where it has a subject's points), or a folder of image
files (each file's name without suffix is its subject id). The written landmarks.csv is an ordinary one (every
command reads it) with three more columns: confidence, flagged (0/1) and reason.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.data.dataset import Dataset, Subject, load_dataset
from osteoscreen.io.imageio import SUPPORTED_SUFFIXES
from osteoscreen.io.outputs import atomic_path
from osteoscreen.landmarking.model import LandmarkModel, Suggestion

SUGGESTED_COLUMNS = ("subject_id", "landmark", "x", "y", "confidence", "flagged", "reason")


def radiographs_in(source: str | Path) -> list[tuple[str, Path, float | None]]:
    """(subject id, image file, pixel spacing from subjects.csv or None) of every radiograph of an input."""
    source = Path(source)
    if source.is_file():
        return [(source.stem, source, None)]
    if not source.is_dir():
        raise InputError(f"{source}: no such image file or directory")
    if (source / "subjects.csv").is_file():
        dataset = load_dataset(source, check_images=False, require_labels=False, require_landmarks=False,
                               ignore_unknown_labels=True)
        return [(s.subject_id, s.image_path, s.spacing_mm) for s in dataset.subjects]
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise InputError(f"{source}: holds neither subjects.csv nor image files "
                         f"({', '.join(sorted(SUPPORTED_SUFFIXES))})")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise InputError(f"{source}: {stems[path.stem].name} and {path.name} would both be subject "
                             f"{path.stem!r}; rename one, or give a subjects.csv")
        stems[path.stem] = path
    return [(stem, path, None) for stem, path in stems.items()]


def suggest_all(model: LandmarkModel, items: list[tuple[str, Path, float | None]],
                progress: Callable[[Iterable], Iterable] = iter) -> list[tuple[str, Suggestion]]:
    """(subject id, Suggestion) of each radiograph, in input order; an unreadable image stops with its name."""
    results = []
    for subject_id, path, spacing in progress(items):
        radiograph = Subject(subject_id, path, None, np.full((len(LANDMARKS), 2), np.nan), spacing).load_image()
        results.append((subject_id, model.suggest(radiograph, what=str(path))))
    return results


def write_suggestions(path: str | Path, results: list[tuple[str, Suggestion]]) -> Path:
    """landmarks.csv of the suggestions (module docstring), written whole or not at all."""
    with atomic_path(path) as partial, open(partial, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SUGGESTED_COLUMNS)
        for subject_id, suggestion in results:
            for record in suggestion.records():
                writer.writerow([subject_id, record["landmark"], f"{record['x']:.1f}", f"{record['y']:.1f}",
                                 f"{record['confidence']:.3f}", int(record["flagged"]), record["reason"]])
    return Path(path)


def with_suggested_landmarks(dataset: Dataset, model: LandmarkModel, progress: Callable[[Iterable], Iterable] = iter
                             ) -> tuple[Dataset, dict[str, Suggestion]]:
    """The dataset with every subject that has no complete annotation given the model's suggested landmarks
    (subject_with_suggestion), and the suggestions by subject id. Annotated subjects keep their points."""
    lacking = [s for s in dataset.subjects if not np.isfinite(s.landmarks).all()]
    found = dict(suggest_all(model, [(s.subject_id, s.image_path, s.spacing_mm) for s in lacking], progress))
    subjects = [subject_with_suggestion(s, found[s.subject_id]) if s.subject_id in found else s
                for s in dataset.subjects]
    return Dataset(dataset.root, subjects), found


def subject_with_suggestion(subject: Subject, suggestion: Suggestion) -> Subject:
    """A subject whose landmarks are a suggestion's (with their confidence and flags)."""
    return replace(subject, landmarks=suggestion.points.copy(), landmark_confidence=suggestion.confidence.copy(),
                   landmark_flags=suggestion.reasons)
