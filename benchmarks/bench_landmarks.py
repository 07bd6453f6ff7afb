"""The landmark suggester's speed on the default 70-subject cohort: training on all 70 radiographs (target: at most
15 minutes on 2 CPU cores) and suggesting one radiograph from its file (target: at most 2 s), with the default
LandmarkConfig. Training is timed once (it is minutes long); suggestion is the median of REPEATS."""

from __future__ import annotations

import time

from common import REPEATS, Row, default_cohort, median_seconds
from osteoscreen.data.dataset import load_dataset
from osteoscreen.landmarking.model import LandmarkModel

TRAIN_TARGET_S, SUGGEST_TARGET_S = 15 * 60, 2.0


def run() -> list[Row]:
    data = default_cohort()
    start = time.perf_counter()
    model = LandmarkModel.fit(data)
    train = time.perf_counter() - start
    image = load_dataset(data, check_images=False, require_labels=False).subjects[0].image_path
    suggest = median_seconds(lambda: model.suggest(image))
    return [Row("landmark model: train on 70 radiographs, default config (s; once)", f"{train:.0f}", "-", "-",
                f"<= {TRAIN_TARGET_S}", train <= TRAIN_TARGET_S),
            Row(f"landmark model: suggest one radiograph from its PNG (s; median of {REPEATS})", f"{suggest:.2f}",
                "-", "-", f"<= {SUGGEST_TARGET_S}", suggest <= SUGGEST_TARGET_S)]
