"""`osteoscreen predict`: a model screens a dataset's radiographs, and hands each result to the writers
(prediction_writers: predictions.csv, figures, prediction.json).

Subjects are screened one at a time (each radiograph decoded, screened by `Model.screen_subject`, given to the
writers and let go: flat memory), or in shards as Ray tasks; either way the writers' records come back in input
order, so the files are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from osteoscreen.core.distributed import TaskResources
from osteoscreen.data.dataset import Dataset, Subject
from osteoscreen.deploy.model import Model
from osteoscreen.deploy.prediction_writers import (
    PREDICTIONS_FILE,
    RUN_FILE,
    PredictionRun,
    Screened,
    Writer,
    writers_for,
)
from osteoscreen.io.outputs import output_folder, subject_file_names


def screen_subjects(shared: tuple[Model, Sequence[Writer], Path], work: list[tuple[Subject, str]]) -> list[list]:
    """Screen the given (subject, file-name stem) pairs one at a time (flat memory), each handed to every
    writer: [per pair: [per writer: its record]]. A Ray task screens one shard this way."""
    model, writers, folder = shared
    records = []
    for subject, name in work:
        radiograph = subject.load_image()
        item = Screened(subject, name, radiograph, model.screen_subject(subject, radiograph))
        records.append([writer.radiograph(folder, item, model) for writer in writers])
    return records


def predict(model: Model, dataset: Dataset, out_dir: str | Path, figures: bool = True,
            progress: Callable = iter, ray: TaskResources | None = None, address: str | None = None,
            landmark_model: dict | None = None, writers: Sequence[Writer] = ()) -> Path:
    """Screen every subject of `dataset`: DIR/predictions.csv (input order), DIR/prediction.json and, with
    figures, DIR/figures/<subject>.png; `writers`: further outputs (prediction_writers.Writer). Returns the
    CSV's path.

    Subjects whose landmarks were suggested (Subject.landmark_confidence) are marked in the CSV and the figures;
    prediction.json then records the landmark model (`landmark_model`: its path and record) and every suggested
    point with its confidence and flag.

    ray: screen shards of the input as Ray tasks of these resources (on `address`, or a local Ray instance);
    the records come back in input order, so every file equals a local run's. The tasks write each
    radiograph's own files (the figures): on a cluster, DIR must be on storage every node shares.
    """
    out_dir = Path(out_dir)
    model.check_covariates(dataset.subjects)
    names = subject_file_names([s.subject_id for s in dataset.subjects])
    run = PredictionRun(model, list(dataset.subjects), names, landmark_model)
    writers = [*writers_for(figures), *writers]
    with output_folder(out_dir, replaces=RUN_FILE) as folder:
        for writer in writers:
            writer.start(folder, run)
        shared = (model, writers, folder.resolve())
        work = list(zip(dataset.subjects, names, strict=True))
        if ray is None:
            records = [record for item in progress(work) for record in screen_subjects(shared, [item])]
        else:
            records = _screen_on_ray(shared, work, ray, address, progress)
        for index, writer in enumerate(writers):
            writer.finish(folder, run, [record[index] for record in records])
    return out_dir / PREDICTIONS_FILE


SHARDS_PER_SLOT = 4  # shards per task slot: balances uneven shards without a task per radiograph


def _screen_on_ray(shared, work: list, resources: TaskResources, address: str | None, progress: Callable
                   ) -> list[list]:
    from osteoscreen.core.distributed import cluster_slots, ray_map, ray_session

    with ray_session(address):
        count = min(len(work), cluster_slots(resources) * SHARDS_PER_SLOT) or 1
        shards = [list(shard) for shard in np.array_split(np.arange(len(work)), count) if len(shard)]
        results: dict[int, list[list]] = {}
        for position, records in progress(ray_map(screen_subjects, shared, [[work[i] for i in s] for s in shards],
                                                  resources)):
            results[position] = records
    return [record for position in range(len(shards)) for record in results[position]]
