"""From a dataset subject to its normalised context crops: the unit that training, export and prediction share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from osteoscreen.core.errors import InputError
from osteoscreen.data.dataset import Dataset, Subject, load_dataset
from osteoscreen.data.patches import (
    PatchConfig,
    check_apart,
    crop_contexts,
    intensity_window,
    normalise_intensity,
    render_views,
)
from osteoscreen.io.imageio import Radiograph


@dataclass
class SubjectPatches:
    """crops: [8, S, S] float32 in [0, 1] context crops (S = ceil(side * context)); side: patch side in px;
    padded: how many of the 8 patch windows reached past the image border; age, sex: the subject's covariates."""

    subject_id: str
    label: int | None
    crops: np.ndarray
    side: int
    padded: int
    age: float | None = None  # the subject's covariates (Subject.age, Subject.sex), for clinical methods
    sex: str | None = None

    def plain_views(self, context: float, out_size: int | None = None) -> np.ndarray:
        """[8, out, out] float32: the un-augmented patches, at native size when out_size is None."""
        size = self.side if out_size is None else out_size
        return render_views(torch.from_numpy(self.crops), context, size).numpy()


def load_dataset_with_patches(data_dir: str | Path, config: PatchConfig, progress: Callable = iter,
                              allow_shared_images: bool = True) -> tuple[Dataset, list[SubjectPatches]]:
    """`load_dataset(data_dir, allow_shared_images=...)` and every subject's crops, each radiograph decoded once:
    the crops are cut while the dataset check holds the pixels (instead of decoding every image a second time)."""
    cut: dict[str, SubjectPatches] = {}

    def keep_patches(subject: Subject, radiograph: Radiograph) -> None:  # its InputError: one more problem
        cut[subject.subject_id] = cut_subject_patches(subject, radiograph, config)

    dataset = load_dataset(data_dir, on_image=keep_patches, progress=progress, allow_shared_images=allow_shared_images)
    return dataset, [cut[subject.subject_id] for subject in dataset.subjects]


def check_screenable(subject: Subject, radiograph: Radiograph, config: PatchConfig) -> None:
    """What cut_subject_patches refuses before it cuts (InputError naming the subject and its file): landmarks
    closer than half a patch side, a radiograph without contrast. A load_dataset on_image for commands that check a
    dataset before they cut its patches (`validate`, `predict`)."""
    _patch_side(subject, radiograph, config)
    try:
        intensity_window(radiograph.pixels)
    except InputError as error:
        raise _naming(subject, error) from None


def _patch_side(subject: Subject, radiograph: Radiograph, config: PatchConfig) -> int:
    """The subject's patch side in px, its landmarks checked to lie at least half of it apart (check_apart)."""
    side = config.side_px(radiograph.spacing_mm, where=f"subject {subject.subject_id!r} ({subject.image_path})")
    try:
        check_apart(subject.landmarks, side)
    except InputError as error:
        raise _naming(subject, error) from None
    return side


def _naming(subject: Subject, error: InputError) -> InputError:
    return InputError(f"subject {subject.subject_id!r} ({subject.image_path}): {error}")


def select_task(dataset: Dataset, patches: list[SubjectPatches], task: str) -> tuple[list[SubjectPatches], dict]:
    """The patches of the subjects a task uses (Dataset.for_task), relabelled for it, and the summary runs and
    models record: Dataset.summary of those subjects plus the task, how many subjects the dataset listed and how
    many of each WHO class the task excluded."""
    chosen, excluded = dataset.for_task(task)
    by_id = {p.subject_id: p for p in patches}
    summary = {**chosen.summary(), "task": task, "listed": len(dataset.subjects), "excluded": excluded}
    return [replace(by_id[s.subject_id], label=s.label) for s in chosen.subjects], summary


def load_subject_patches(subject: Subject, config: PatchConfig) -> SubjectPatches:
    """Read the subject's radiograph and cut its 8 context crops (errors name the subject and its file)."""
    return cut_subject_patches(subject, subject.load_image(), config)


def cut_subject_patches(subject: Subject, radiograph: Radiograph, config: PatchConfig) -> SubjectPatches:
    """The 8 context crops of an already decoded radiograph of the subject."""
    side = _patch_side(subject, radiograph, config)
    try:
        crops, padded = crop_contexts(normalise_intensity(radiograph.pixels), subject.landmarks, side,
                                      config.context)
    except InputError as error:
        raise _naming(subject, error) from None
    return SubjectPatches(subject.subject_id, subject.label, crops, side, padded, subject.age, subject.sex)
