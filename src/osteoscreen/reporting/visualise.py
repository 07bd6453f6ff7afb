"""Figures shared by the patch export and the report: subject montages and the cohort overview."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.io.png import png_data_uri

CLASS_COLOURS = {"osteoporosis": "#c0392b", "osteopenia": "#d68910", "normal": "#2471a3", "unlabelled": "#555555"}


#: A montage's geometry (px): each patch enlarged nearest-neighbour to MONTAGE_PATCH_PX, the gaps between them,
#: the room each name and each title line takes.
MONTAGE_PATCH_PX, MONTAGE_GAP_PX, MONTAGE_NAME_PX, MONTAGE_TITLE_LINE_PX = 176, 24, 20, 20


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at `size` px: the font matplotlib ships and the other figures use."""
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def subject_montage(patches: np.ndarray, title: str, class_name: str = "unlabelled") -> Image.Image:
    """The 8 patches ([8, h, w] in [0, 1]) in 2 rows (patient's right, left) x 4 groups, each under its name,
    below `title` (one or more lines) in the class's colour: an RGB image, 800 px wide. Drawn with Pillow, not
    matplotlib: a montage takes 27 ms instead of about 270 ms (docs/performance.md)."""
    from osteoscreen.data.patches import to_uint8

    side, gap, name_px = MONTAGE_PATCH_PX, MONTAGE_GAP_PX, MONTAGE_NAME_PX
    title_px = 16 + MONTAGE_TITLE_LINE_PX * len(title.split("\n"))
    width = 4 * side + 4 * gap
    image = Image.new("RGB", (width, title_px + 2 * (name_px + side) + 3 * gap // 2), "white")
    draw = ImageDraw.Draw(image)
    draw.multiline_text((width // 2, 10), title, fill=CLASS_COLOURS.get(class_name, "#000000"), font=_font(15),
                        anchor="ma", align="center")
    for index, (name, patch) in enumerate(zip(LANDMARKS, to_uint8(patches), strict=True)):
        left = gap // 2 + (index // 2) * (side + gap)
        top = title_px + (index % 2) * (name_px + side + gap // 2)
        draw.text((left + side // 2, top + name_px - 5), name, fill="black", font=_font(12), anchor="ms")
        image.paste(Image.fromarray(patch).resize((side, side), Image.Resampling.NEAREST), (left, top + name_px))
    return image


def image_uri(image: Image.Image) -> str:
    """A Pillow image as a PNG data URI, for a self-contained HTML page."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return png_data_uri(buffer.getvalue())


def figure_uri(figure: Figure) -> str:
    """The figure as a PNG data URI, for a self-contained HTML page."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return png_data_uri(buffer.getvalue())


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
        colour = to_rgb(CLASS_COLOURS.get(class_name, "#555555"))
        image[top : top + thumb, :bar] = np.array(colour) * 255
        strip = np.concatenate(list(np.clip(patches, 0, 1)), axis=1)
        image[top : top + thumb, bar:] = (strip[..., None] * 255).round().astype(np.uint8)
    return image


def screening_figure(pixels: np.ndarray, subject, patches, context: float, probability: float,
                     attention: np.ndarray | None, decision: str, threshold: float, path,
                     unlike_training: bool | None = None) -> None:
    """One subject's screening result (screening_canvas) as a PNG written atomically to `path`."""
    from osteoscreen.io.outputs import atomic_path

    figure = screening_canvas(pixels, subject, patches, context, probability, attention, decision, threshold,
                              unlike_training)
    with atomic_path(path) as partial:
        figure.savefig(partial, format="png")


def screening_rgb(*args, **kwargs) -> np.ndarray:
    """The screening figure (screening_canvas's arguments) as pixels: [H, W, 3] uint8 RGB (1200 x 950 px)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(screening_canvas(*args, **kwargs))
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def screening_canvas(pixels: np.ndarray, subject, patches, context: float, probability: float,
                     attention: np.ndarray | None, decision: str, threshold: float,
                     unlike_training: bool | None = None) -> Figure:
    """One subject's screening result as a figure (12 x 9.5 in at 100 dpi).

    Top: the radiograph (pixels [H, W], shown downsampled) with its 8 landmarks; bottom: the 8 patches (as the
    network saw them, un-augmented), the attention per landmark group, p(osteoporosis) against the threshold,
    and a warning line when the radiograph is unlike the model's training data (novelty check).
    """
    from osteoscreen.core.landmarks import GROUPS
    from osteoscreen.data.patches import normalise_intensity

    step = max(1, int(np.ceil(max(pixels.shape) / 1400)))
    figure = Figure(figsize=(12, 9.5), dpi=100)
    grid = figure.add_gridspec(3, 5, height_ratios=[2.2, 1, 1], width_ratios=[1, 1, 1, 1, 1.5])
    overview = figure.add_subplot(grid[0, :])
    overview.imshow(normalise_intensity(pixels[::step, ::step]), cmap="gray", vmin=0, vmax=1)
    confidence, flags = subject.landmark_confidence, subject.landmark_flags or ("",) * len(LANDMARKS)
    for index, (name, (x, y)) in enumerate(zip(LANDMARKS, subject.landmarks, strict=True)):
        colour = "#e74c3c" if flags[index] else "#f1c40f"
        label = name if confidence is None else f"{name} {confidence[index]:.2f}" + (" FLAGGED" if flags[index] else "")
        overview.plot(x / step, y / step, "+", color=colour, markersize=12, markeredgewidth=2)
        overview.annotate(label, (x / step, y / step), xytext=(4, -6), textcoords="offset points", color=colour,
                          fontsize=8)
    overview.set_axis_off()
    plain = patches.plain_views(context)
    for index, name in enumerate(LANDMARKS):
        axis = figure.add_subplot(grid[1 + index % 2, index // 2])
        axis.imshow(plain[index], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(name, fontsize=8)
        axis.set_axis_off()
    bars = figure.add_subplot(grid[1:, 4])
    if attention is None:
        bars.text(0.5, 0.5, "this model has\nno attention weights", ha="center", va="center")
        bars.set_axis_off()
    else:
        bars.barh(list(GROUPS), attention, color="#7f8c8d")
        bars.set_xlim(0, 1)
        bars.invert_yaxis()
        bars.set_title("attention per landmark group", fontsize=9)
    colour = CLASS_COLOURS.get(decision, "black")
    warning = ("\nWARNING: this radiograph is unlike the model's training data; the result may not apply"
               if unlike_training else "")
    if confidence is not None:
        count = sum(bool(f) for f in flags)
        warning += (f"\nlandmarks SUGGESTED by a landmark model (confidence shown; lowest {min(confidence):.2f}; "
                    f"{count} flagged): check them")
    figure.suptitle(f"{subject.subject_id}: p(osteoporosis) = {probability:.2f} (threshold {threshold:.2f}) -> "
                    f"{decision}    [research pre-screening, not a diagnosis]{warning}", color=colour, fontsize=12)
    figure.tight_layout()
    return figure

