"""One radiograph screened with PyTorch and with the model's ONNX export in onnxruntime (CPU, 1 thread each):
the time of `screen` from the PNG and its landmarks (decode, cut, network, rule, novelty; median of REPEATS in one
process), and the peak memory (VmHWM) of a fresh process that loads the model and screens that radiograph once.
The model: the default frozen group-attention model (EfficientNet-Lite0, 1 view, 5 epochs) trained on 10 subjects
of the default cohort, 5 of each class (training is not timed; its size does not change a screening's cost).
Reported, no target.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench_memory import peak_rss_gib
from common import REPEATS, Row, default_cohort, median_seconds

SCREEN = """
from osteoscreen.deploy.{module} import {cls}
from osteoscreen.data.dataset import load_dataset
subject = load_dataset({data!r}, check_images=False, require_labels=False).subjects[0]
{cls}.load({model!r}).screen(subject.image_path, subject.landmarks, age=subject.age, sex=subject.sex)
"""


def _small_model(data: Path, folder: Path) -> tuple[Path, Path]:
    """(MODEL, EXPORT) of a model trained on the first 10 subjects of `data` (copied with their landmarks)."""
    import csv
    import shutil

    from osteoscreen.deploy.model import train_model
    from osteoscreen.deploy.onnx_export import export_model
    from osteoscreen.training.config import TrainConfig

    subset = folder / "data"
    (subset / "images").mkdir(parents=True)
    with open(data / "subjects.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [r for r in rows if r["label"] == "normal"][:5] + [r for r in rows if r["label"] == "osteoporosis"][:5]
    for name in ("subjects.csv", "landmarks.csv"):
        with open(data / name, newline="") as source, open(subset / name, "w", newline="") as target:
            reader = csv.DictReader(source)
            writer = csv.DictWriter(target, reader.fieldnames, lineterminator="\n")
            writer.writeheader()
            writer.writerows(r for r in reader if r["subject_id"] in {k["subject_id"] for k in kept})
    for row in kept:
        shutil.copy(data / row["image"], subset / row["image"])
    model = train_model(subset, folder / "model", TrainConfig(views=1, epochs=5))
    return model, export_model(model, folder / "export")


def run() -> list[Row]:
    from osteoscreen.data.dataset import load_dataset
    from osteoscreen.deploy.model import Model
    from osteoscreen.deploy.onnx_model import OnnxModel

    data = default_cohort()
    subject = load_dataset(data, check_images=False, require_labels=False).subjects[0]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model_dir, export_dir = _small_model(data, Path(folder))
        for name, cls, path in (("PyTorch", Model, model_dir), ("ONNX Runtime", OnnxModel, export_dir)):
            model = cls.load(path)
            seconds = median_seconds(lambda m=model: m.screen(subject.image_path, subject.landmarks))
            gib = peak_rss_gib(SCREEN.format(module=cls.__module__.rsplit(".", 1)[1], cls=cls.__name__,
                                             data=str(data), model=str(path)))
            rows += [Row(f"screen one radiograph from its PNG, {name} (s; median of {REPEATS})", f"{seconds:.3f}",
                         "", "", "", None),
                     Row(f"peak RSS, load + screen one radiograph, {name} (GiB)", f"{gib:.2f}", "", "", "", None)]
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
