"""`osteoscreen predict`: a model screens a dataset's radiographs into predictions.csv and per-subject figures.

Subjects are screened one at a time (each radiograph decoded, screened by `Model.screen_subject` and let go: flat
memory), or in shards as Ray tasks; either way the rows come out in input order, so the CSV is the same.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from osteoscreen.data.dataset import Dataset, Subject
from osteoscreen.distributed import TaskResources
from osteoscreen.landmarking.model import landmark_records
from osteoscreen.landmarks import CLASSES, GROUPS, WHO_CLASSES, binary_label
from osteoscreen.model import Model
from osteoscreen.outputs import output_folder, strict_json, subject_file_names, write_index

PREDICTIONS_FILE, RUN_FILE = "predictions.csv", "prediction.json"
#: predict's predictions.csv. The columns it shares with cv's (runs.PREDICTION_COLUMNS) are named and mean the same:
#: subject_id; p_osteoporosis (after the model's calibration); decision (the class at the model's threshold);
#: att_<group>; y_true (the subject's class in the model's task, CLASSES; empty when unlabelled or excluded by the
#: task). who_class: the WHO class subjects.csv gives, whatever the task. landmarks: "annotated" or "suggested" (by a
#: landmark model: `predict --suggest`), with the suggestion's lowest confidence and how many points it flagged.
PREDICTION_COLUMNS = ["subject_id", "p_osteoporosis", "decision", *[f"att_{g}" for g in GROUPS], "y_true",
                      "who_class", "novelty_distance", "unlike_training", "landmarks", "landmark_confidence_min",
                      "landmarks_flagged"]


def landmark_columns(subject: Subject) -> list[str]:
    """The landmarks, landmark_confidence_min and landmarks_flagged fields of a subject's row."""
    if subject.landmark_confidence is None:
        return ["annotated", "", ""]
    return ["suggested", f"{float(np.min(subject.landmark_confidence)):.3f}",
            str(sum(bool(reason) for reason in subject.landmark_flags or ()))]


def _task_class(who: int | None, task: str) -> str:
    label = binary_label(who, task)
    return "" if label is None else CLASSES[label]


def screen_subjects(shared: tuple[Model, Path | None], work: list[tuple[Subject, str]]) -> list[list]:
    """predictions.csv rows of the given (subject, figure name) pairs, one subject at a time (flat memory); with a
    figure directory, each subject's figure is written there. A Ray task screens one shard this way."""
    from osteoscreen.visualise import screening_figure

    model, figure_dir = shared
    rows = []
    for subject, name in work:
        radiograph = subject.load_image()
        result = model.screen_subject(subject, radiograph)
        rows.append([subject.subject_id, f"{result.probability:.6f}", result.decision,
                     *([""] * len(GROUPS) if result.attention is None else [f"{w:.6f}" for w in result.attention]),
                     _task_class(subject.who, model.task), "" if subject.who is None else WHO_CLASSES[subject.who],
                     "" if result.distance is None else f"{result.distance:.3f}",
                     "" if result.unlike_training is None else ("yes" if result.unlike_training else "no"),
                     *landmark_columns(subject)])
        if figure_dir is not None:
            screening_figure(radiograph.pixels, subject, result.patches, model.config.patch.context,
                             result.probability, result.attention, result.decision, model.threshold,
                             figure_dir / f"{name}.png", result.unlike_training)
    return rows


def predict(model: Model, dataset: Dataset, out_dir: str | Path, figures: bool = True,
            progress: Callable = iter, ray: TaskResources | None = None, address: str | None = None,
            landmark_model: dict | None = None) -> Path:
    """Screen every subject of `dataset`: DIR/predictions.csv (input order) and, with figures,
    DIR/figures/<subject>.png. Returns the CSV's path.

    Subjects whose landmarks were suggested (Subject.landmark_confidence) are marked in the CSV and the figures;
    prediction.json then records the landmark model (`landmark_model`: its path and record) and every suggested
    point with its confidence and flag.

    ray: screen shards of the input as Ray tasks of these resources (on `address`, or a local Ray instance);
    the rows come back in input order, so the CSV equals a local run's. Figures are written by the tasks: on a
    cluster, DIR must be on storage every node shares.
    """
    out_dir = Path(out_dir)
    model.check_covariates(dataset.subjects)
    ids = [s.subject_id for s in dataset.subjects]
    names = subject_file_names(ids)
    with output_folder(out_dir, replaces=RUN_FILE) as folder:
        figure_dir = folder / "figures" if figures else None
        if figure_dir is not None:
            figure_dir.mkdir()
            write_index(figure_dir, ids, [f"{name}.png" for name in names])
        shared = (model, figure_dir and figure_dir.resolve())
        work = list(zip(dataset.subjects, names, strict=True))
        if ray is None:
            rows = [row for item in progress(work) for row in screen_subjects(shared, [item])]
        else:
            rows = _screen_on_ray(shared, work, ray, address, progress)
        with open(folder / PREDICTIONS_FILE, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(PREDICTION_COLUMNS)
            writer.writerows(rows)
        rule = model.rule
        suggested = {s.subject_id: landmark_records(s.landmarks, s.landmark_confidence, s.landmark_flags)
                     for s in dataset.subjects if s.landmark_confidence is not None}
        (folder / RUN_FILE).write_text(strict_json({"model": model.method, "model_created": model.info["created"],
                                                    "threshold": rule.threshold, "decision_rule": rule.rule,
                                                    "calibration": rule.calibration, "n": len(rows),
                                                    "landmark_model": landmark_model if suggested else None,
                                                    "suggested_landmarks": suggested}))
    return out_dir / PREDICTIONS_FILE


SHARDS_PER_SLOT = 4  # shards per task slot: balances uneven shards without a task per radiograph


def _screen_on_ray(shared, work: list, resources: TaskResources, address: str | None, progress: Callable
                   ) -> list[list]:
    from osteoscreen.distributed import cluster_slots, ray_map, ray_session

    with ray_session(address):
        count = min(len(work), cluster_slots(resources) * SHARDS_PER_SLOT) or 1
        shards = [list(shard) for shard in np.array_split(np.arange(len(work)), count) if len(shard)]
        results: dict[int, list[list]] = {}
        for position, rows in progress(ray_map(screen_subjects, shared, [[work[i] for i in s] for s in shards],
                                               resources)):
            results[position] = rows
    return [row for position in range(len(shards)) for row in results[position]]
