"""Phantom patches side by side, one row per landmark group: normal subjects on the left, osteoporotic on the right.

Usage: .venv/bin/python scripts/phantom_montage.py PATCHES OUT.png [--per-class 4]
PATCHES is a folder written by `osteoscreen patches` (its index.csv names each subject's folder); the patient's
right-side patch of each group is shown, at native size (100 px) and on the file's own grey scale.
"""

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from osteoscreen.core.landmarks import CLASSES, GROUPS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("patches", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=4)
    args = parser.parse_args()
    files = {row["subject_id"]: row["file"] for row in csv.DictReader(open(args.patches / "index.csv"))}
    labels = {row["subject_id"]: row["label"].lower()
              for row in csv.DictReader(open(args.patches.parent / "data" / "subjects.csv"))}
    chosen = [sid for name in CLASSES for sid in sorted(s for s in files if labels.get(s) == name)[:args.per_class]]
    figure, axes = plt.subplots(len(GROUPS), len(chosen), figsize=(1.3 * len(chosen), 1.45 * len(GROUPS)))
    for row, group in enumerate(GROUPS):
        for column, sid in enumerate(chosen):
            patch = np.asarray(Image.open(args.patches / "patches" / files[sid] / f"{group}_right.png"))
            axis = axes[row, column]
            axis.imshow(patch, cmap="gray", vmin=0, vmax=255)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(f"{sid}\n{labels[sid]}", fontsize=7)
            if column == 0:
                axis.set_ylabel(group, fontsize=8)
    figure.suptitle("Phantom patches (100 px, as `osteoscreen patches` writes them): normal left, osteoporosis right",
                    fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
