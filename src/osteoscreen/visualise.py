"""Figures shared by the patch export and the report: subject montages and the cohort overview."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from osteoscreen.landmarks import LANDMARKS  # noqa: E402

CLASS_COLOURS = {"osteoporosis": "#c0392b", "normal": "#2471a3", "unlabelled": "#555555"}


def subject_montage(patches: np.ndarray, title: str, class_name: str = "unlabelled") -> plt.Figure:
    """Figure of the 8 patches ([8, h, w] in [0, 1]) in 2 rows (patient's right, left) x 4 groups."""
    figure, axes = plt.subplots(2, 4, figsize=(8, 4.4), dpi=100)
    for index, name in enumerate(LANDMARKS):
        axis = axes[index % 2, index // 2]
        axis.imshow(patches[index], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(name, fontsize=9)
        axis.set_axis_off()
    figure.suptitle(title, color=CLASS_COLOURS.get(class_name, "black"), fontsize=11)
    figure.tight_layout()
    return figure


def save_figure(figure: plt.Figure, path) -> None:
    figure.savefig(path)
    plt.close(figure)


def cohort_overview(rows: list[tuple[str, str, np.ndarray]], thumb: int = 64) -> np.ndarray:
    """One row per subject: a class-coloured bar, then its 8 patches as thumbnails.

    rows: (subject_id, class name, [8, thumb, thumb] float patches). Returns [N*thumb, (8*thumb + bar), 3]
    uint8, osteoporosis first.
    """
    bar = thumb // 4
    ordered = sorted(rows, key=lambda row: (row[1] != "osteoporosis", row[0]))
    image = np.zeros((len(ordered) * thumb, bar + len(LANDMARKS) * thumb, 3), np.uint8)
    for index, (_, class_name, patches) in enumerate(ordered):
        top = index * thumb
        colour = matplotlib.colors.to_rgb(CLASS_COLOURS.get(class_name, "#555555"))
        image[top : top + thumb, :bar] = np.array(colour) * 255
        strip = np.concatenate(list(np.clip(patches, 0, 1)), axis=1)
        image[top : top + thumb, bar:] = (strip[..., None] * 255).round().astype(np.uint8)
    return image
