"""What `predict` writes: each screened radiograph, as one typed `Screened`, handed to every writer.

A writer has three steps, each optional:
- `start(folder, run)`: in the parent process, before any radiograph (make a sub-folder, an index);
- `radiograph(folder, item, model) -> record`: where the radiograph was screened (this process, or a Ray task on a
  cluster: `folder` must then be on storage every node shares); writes the radiograph's own files and returns a
  small picklable record (or None);
- `finish(folder, run, records)`: in the parent, with every radiograph's record in input order (files about all
  of them).

A new output format is one writer class here and its line in `writers_for` (plus the option that asks for it):
no screening code changes. The writers below: predictions.csv (`PredictionTable`), the per-radiograph figures
(`Figures`) and prediction.json (`PredictionRecord`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osteoscreen.core.landmarks import CLASSES, GROUPS, WHO_CLASSES, binary_label
from osteoscreen.data.dataset import Subject
from osteoscreen.deploy.model import Model, Screening
from osteoscreen.io.imageio import Radiograph
from osteoscreen.io.outputs import strict_json, write_index
from osteoscreen.landmarking.model import landmark_records

PREDICTIONS_FILE, RUN_FILE = "predictions.csv", "prediction.json"
#: predict's predictions.csv. The columns it shares with cv's (runs.PREDICTION_COLUMNS) are named and mean the same:
#: subject_id; p_osteoporosis (after the model's calibration); decision (the class at the model's threshold);
#: att_<group>; y_true (the subject's class in the model's task, CLASSES; empty when unlabelled or excluded by the
#: task). who_class: the WHO class subjects.csv gives, whatever the task. landmarks: "annotated" or "suggested" (by a
#: landmark model: `predict --suggest`), with the suggestion's lowest confidence and how many points it flagged.
PREDICTION_COLUMNS = ["subject_id", "p_osteoporosis", "decision", *[f"att_{g}" for g in GROUPS], "y_true",
                      "who_class", "novelty_distance", "unlike_training", "landmarks", "landmark_confidence_min",
                      "landmarks_flagged"]


@dataclass(frozen=True)
class Screened:
    """One screened radiograph as every writer receives it: the dataset subject (id, landmarks [8, 2] px, WHO
    class, covariates, a suggestion's confidence and flags), `name` (its file-name stem, unique in the run), the
    decoded radiograph (pixels [H, W]) and the Screening (p, decision, attention [4], patches, novelty)."""

    subject: Subject
    name: str
    radiograph: Radiograph
    result: Screening


@dataclass(frozen=True)
class PredictionRun:
    """What a run's writers know of it: the model, the subjects in input order with their file-name stems, and
    the landmark model that suggested landmarks ({"path", "record"}; None when none did)."""

    model: Model
    subjects: list[Subject]
    names: list[str]
    landmark_model: dict | None = None


class Writer:
    """A prediction output; every step does nothing unless a subclass says otherwise."""

    def start(self, folder: Path, run: PredictionRun) -> None:
        """Before the first radiograph, in the parent process."""

    def radiograph(self, folder: Path, item: Screened, model: Model) -> object:
        """One radiograph's own files, where it was screened; a small picklable record for finish (or None)."""
        return None

    def finish(self, folder: Path, run: PredictionRun, records: list) -> None:
        """After the last radiograph, in the parent: every radiograph's record, in input order."""


def landmark_columns(subject: Subject) -> list[str]:
    """The landmarks, landmark_confidence_min and landmarks_flagged fields of a subject's row."""
    if subject.landmark_confidence is None:
        return ["annotated", "", ""]
    return ["suggested", f"{float(np.min(subject.landmark_confidence)):.3f}",
            str(sum(bool(reason) for reason in subject.landmark_flags or ()))]


def _task_class(who: int | None, task: str) -> str:
    label = binary_label(who, task)
    return "" if label is None else CLASSES[label]


class PredictionTable(Writer):
    """predictions.csv: one row per radiograph (PREDICTION_COLUMNS), in input order."""

    def radiograph(self, folder: Path, item: Screened, model: Model) -> list[str]:
        subject, result = item.subject, item.result
        return [subject.subject_id, f"{result.probability:.6f}", result.decision,
                *([""] * len(GROUPS) if result.attention is None else [f"{w:.6f}" for w in result.attention]),
                _task_class(subject.who, model.task), "" if subject.who is None else WHO_CLASSES[subject.who],
                "" if result.distance is None else f"{result.distance:.3f}",
                "" if result.unlike_training is None else ("yes" if result.unlike_training else "no"),
                *landmark_columns(subject)]

    def finish(self, folder: Path, run: PredictionRun, records: list) -> None:
        with open(folder / PREDICTIONS_FILE, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(PREDICTION_COLUMNS)
            writer.writerows(records)


class Figures(Writer):
    """figures/<name>.png per radiograph (visualise.screening_figure) and figures/index.csv."""

    def start(self, folder: Path, run: PredictionRun) -> None:
        (folder / "figures").mkdir()
        write_index(folder / "figures", [s.subject_id for s in run.subjects], [f"{n}.png" for n in run.names])

    def radiograph(self, folder: Path, item: Screened, model: Model) -> None:
        from osteoscreen.reporting.visualise import screening_figure

        result = item.result
        screening_figure(item.radiograph.pixels, item.subject, result.patches, model.config.patch.context,
                         result.probability, result.attention, result.decision, model.threshold,
                         folder / "figures" / f"{item.name}.png", result.unlike_training)


class PredictionRecord(Writer):
    """prediction.json: the model and its decision rule, the count, and every suggested landmark with its
    confidence and flag (with the landmark model that suggested them)."""

    def finish(self, folder: Path, run: PredictionRun, records: list) -> None:
        rule = run.model.rule
        suggested = {s.subject_id: landmark_records(s.landmarks, s.landmark_confidence, s.landmark_flags)
                     for s in run.subjects if s.landmark_confidence is not None}
        (folder / RUN_FILE).write_text(strict_json({
            "model": run.model.method, "model_created": run.model.info["created"], "threshold": rule.threshold,
            "decision_rule": rule.rule, "calibration": rule.calibration, "n": len(records),
            "landmark_model": run.landmark_model if suggested else None, "suggested_landmarks": suggested}))


def writers_for(figures: bool) -> list[Writer]:
    """The writers of `osteoscreen predict` (figures: also the per-radiograph figures)."""
    return [PredictionTable(), PredictionRecord(), *([Figures()] if figures else [])]
