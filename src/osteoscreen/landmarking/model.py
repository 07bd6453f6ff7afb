"""`LandmarkModel`: learns the 8 landmarks from annotated radiographs and suggests them on new ones.

One heatmap network (network.py, trained by training.py) places all 8 points on the whole radiograph fitted
into `view`; it looks twice, at the radiograph and at its mirror image (whose landmarks are the same with right
and left swapped), and each point is the mean of the two estimates. Every point gets a confidence (the heatmap
mass near its peak, the lower of the two looks') and is flagged, with the reason, when the model should not be
trusted there:

- the confidence is below CONFIDENCE_FLOOR (a flat or two-peaked heatmap: nothing there looks like the landmark,
  or two places do);
- the two looks disagree by more than DISAGREEMENT of the image width (about 4 mm on a PR);
- the point lies outside the image, or within BORDER_FRACTION of its edge (the jaw cut off by the frame);
- its place relative to the other seven is unlike every training radiograph's (SHAPE_Z standard deviations:
  a cropped, rotated or other kind of image);
- the whole image is not shaped like a panoramic radiograph (PR_ASPECT: a cephalogram or a photo given by
  mistake): every point is flagged, with a warning.

A full-resolution refinement stage (a second network on a crop around each point) was built and measured on the
phantom: it did not lower the error (docs/landmarks.md, "Design"), so it is not part of the model.

A model folder (LMODEL/) holds `weights.safetensors` (the network's tensors) and `landmark-model.json` (format,
configuration, training data, the training shapes' statistics), bound to each other as `train`'s models are
(bound_files: an edit of either is refused).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from osteoscreen.core.arguments import check_fields, check_range, check_type
from osteoscreen.core.errors import InputError, InputWarning
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.core.utils import intra_op_threads
from osteoscreen.core.version import __version__
from osteoscreen.data.dataset import Subject, load_dataset
from osteoscreen.io.bound_files import read_bound, write_bound
from osteoscreen.io.imageio import Radiograph, radiograph_from_array, read_radiograph
from osteoscreen.io.jsoninput import JsonValue, read_dataclass
from osteoscreen.io.outputs import output_folder
from osteoscreen.landmarking.geometry import SWAP, WorkingImage, about, sample, to_image, whole_view
from osteoscreen.landmarking.network import HeatmapNet, read_heatmaps
from osteoscreen.landmarking.training import build_net, train_net

LANDMARK_MODEL_FORMAT = 1
WEIGHTS_FILE, INFO_FILE = "weights.safetensors", "landmark-model.json"
#: Below this confidence a point is flagged. Fixed in advance: a Gaussian heatmap of the training targets holds
#: 0.86 of its mass in the window; two equal peaks hold at most half each.
CONFIDENCE_FLOOR = 0.5
DISAGREEMENT = 0.015
BORDER_FRACTION = 0.01
SHAPE_Z = 6.0
SHAPE_SD_FLOOR = 0.02  # of the landmarks' spread: the smallest standard deviation a shape statistic is given
#: Height / width of a panoramic radiograph (most are 0.45-0.55); a cephalogram or a photo is nearer 0.75-1.3.
PR_ASPECT = (0.35, 0.7)
MIN_WIDTH, MIN_HEIGHT = 600, 300


@dataclass(frozen=True)
class LandmarkConfig:
    """How a landmark model is built and trained (every field recorded in its landmark-model.json).

    view: (height, width) px of the whole-radiograph view; stride: view px per heatmap cell; sigma_cells: the
    Gaussian target's sigma in cells; epochs: passes over the training radiographs; batch: radiographs per step;
    threads: intra-op threads (fixed, so that a model is the same on every machine).
    """

    view: tuple[int, ...] = (192, 384)
    stride: int = 4
    sigma_cells: float = 1.0
    epochs: int = 40
    batch: int = 8
    seed: int = 0
    threads: int = 2

    def __post_init__(self):
        check_fields(self)
        h, w = self.view if len(self.view) == 2 else (0, 0)
        check_range(len(self.view) == 2 and 64 <= h <= 1024 and 64 <= w <= 2048 and h % 16 == 0 and w % 16 == 0,
                    "view", "(height, width), multiples of 16 in 64..1024 x 64..2048", self.view)
        check_range(self.stride == 4, "stride", "4 (the decoder's output stride)", self.stride)
        check_range(0.3 <= self.sigma_cells <= 4, "sigma_cells", "a number in [0.3, 4]", self.sigma_cells)
        for name in ("epochs", "batch", "threads"):
            check_range(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))

    @property
    def radius_cells(self) -> int:
        """The window (in cells) a heatmap's point and confidence are read in: 2 sigma, at least 1 cell."""
        return max(1, round(2 * self.sigma_cells))


@dataclass(frozen=True)
class Suggestion:
    """The 8 suggested landmarks of one radiograph: points [8, 2] (x, y) px, dataset convention; confidence [8] in
    [0, 1]; flagged [8] bool; reasons: per landmark, why it is flagged ("" when it is not); image_shape (H, W)."""

    points: np.ndarray
    confidence: np.ndarray
    flagged: np.ndarray
    reasons: tuple[str, ...]
    image_shape: tuple[int, int]
    spacing_mm: float | None = None

    def as_dict(self) -> dict[str, tuple[float, float]]:
        """{landmark: (x, y)}, as Model.screen takes landmarks."""
        return {name: (float(x), float(y)) for name, (x, y) in zip(LANDMARKS, self.points, strict=True)}

    def records(self) -> list[dict]:
        """One JSON-ready record per landmark (landmark_records)."""
        return landmark_records(self.points, self.confidence, self.reasons)


def landmark_records(points: np.ndarray, confidence: np.ndarray, reasons: Sequence[str]) -> list[dict]:
    """Suggested landmarks [8, 2] with confidence [8] and flag reasons [8] as records: landmark, x, y (px, 0.1),
    confidence, flagged, reason."""
    return [{"landmark": name, "x": round(float(x), 1), "y": round(float(y), 1), "confidence": round(float(c), 3),
             "flagged": bool(r), "reason": r}
            for name, (x, y), c, r in zip(LANDMARKS, points, confidence, reasons, strict=True)]


@dataclass
class TrainingImages:
    """Annotated radiographs ready for training: the dataset's subjects (their landmarks [8, 2] px), each one's
    working image, and the record a model keeps of the data (path, hash, n, synthetic)."""

    subjects: list[Subject]
    images: list[WorkingImage]
    summary: dict = field(default_factory=dict)

    @classmethod
    def from_dataset(cls, data: str | Path, progress: Callable[[Iterable], Iterable] = iter,
                     allow_shared_images: bool = True) -> TrainingImages:
        """Every subject of a dataset directory with its landmarks.csv points (labels not needed), validated by
        load_dataset (which also refuses landmarks outside their image) and each radiograph decoded once.
        allow_shared_images=False refuses two subjects sharing a file (evaluation: it would leak across folds)."""
        check_type(data, (str, Path), "data", "a dataset directory")
        images: dict[str, WorkingImage] = {}

        def keep(subject: Subject, radiograph: Radiograph) -> None:
            images[subject.subject_id] = working_image(radiograph, subject.image_path)

        dataset = load_dataset(data, require_labels=False, allow_shared_images=allow_shared_images, on_image=keep,
                               progress=progress)
        summary = {"path": str(dataset.root), "hash": dataset.content_hash(), "n": len(dataset.subjects),
                   "synthetic": (dataset.root / "phantom.json").exists()}
        return cls(dataset.subjects, [images[s.subject_id] for s in dataset.subjects], summary)

    @property
    def points(self) -> list[np.ndarray]:
        """[8, 2] annotated points (px) per radiograph."""
        return [s.landmarks for s in self.subjects]

    @property
    def subject_ids(self) -> list[str]:
        return [s.subject_id for s in self.subjects]

    def subset(self, indices: Sequence[int]) -> TrainingImages:
        return TrainingImages([self.subjects[i] for i in indices], [self.images[i] for i in indices],
                              dict(self.summary, n=len(indices)))


def working_image(radiograph: Radiograph, what: str | Path = "image") -> WorkingImage:
    """A decoded radiograph checked for size (InputError when too small to find landmarks on) -> WorkingImage."""
    height, width = radiograph.pixels.shape
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        raise InputError(f"{what}: {width}x{height} px is too small to place landmarks on (a panoramic radiograph "
                         f"is at least {MIN_WIDTH}x{MIN_HEIGHT} px; most are 2000-3000 px wide)")
    return WorkingImage.from_pixels(radiograph.pixels, radiograph.spacing_mm)


def shape_of(points: np.ndarray) -> np.ndarray:
    """[8, 2] points -> [8, 2] their configuration without position and size: centred on their mean, divided by
    their root-mean-square distance from it."""
    centred = points - points.mean(axis=0)
    return centred / max(float(np.sqrt((centred ** 2).sum(axis=1).mean())), 1e-9)


class LandmarkModel:
    """A trained landmark suggester (module docstring): `fit`, `suggest`, `save`, `load`."""

    def __init__(self, net: HeatmapNet, config: LandmarkConfig, info: dict):
        self.net, self.config, self.info = net.eval(), config, info
        self.shape_mean = np.asarray(info["shape"]["mean"], dtype=np.float64)
        self.shape_sd = np.asarray(info["shape"]["sd"], dtype=np.float64)

    @classmethod
    def fit(cls, data: str | Path | TrainingImages, config: LandmarkConfig | None = None,
            progress: Callable[[str], Callable] = lambda _: iter, weights: str = "imagenet") -> LandmarkModel:
        """Train on annotated radiographs: a dataset directory with landmarks.csv, or TrainingImages.
        progress(stage) wraps the images' loading ("images") and the training steps ("train")."""
        config = config or LandmarkConfig()
        check_type(config, LandmarkConfig, "config")
        training = data if isinstance(data, TrainingImages) else TrainingImages.from_dataset(data, progress("images"))
        if len(training.images) < 2:
            raise InputError(f"a landmark model needs at least 2 annotated radiographs, got {len(training.images)}")
        with intra_op_threads(config.threads):
            net = train_net(training.images, training.points, config, progress("train"), weights)
        shapes = np.stack([shape_of(p) for p in training.points if np.isfinite(p).all()])
        info = {"format": LANDMARK_MODEL_FORMAT, "osteoscreen": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "landmarks": list(LANDMARKS),
                "config": asdict(config), "weights": net.backbone.weights_source,
                "training_data": training.summary,
                "shape": {"mean": shapes.mean(axis=0).round(6).tolist(),
                          "sd": np.maximum(shapes.std(axis=0), SHAPE_SD_FLOOR).round(6).tolist()}}
        return cls(net, config, info)

    # -- suggestion --

    def suggest(self, image: str | Path | Radiograph | np.ndarray, spacing_mm: float | None = None,
                what: str | None = None) -> Suggestion:
        """The 8 landmarks of one radiograph (a file, a decoded Radiograph, or [H, W] pixels in [0, 1]); what: how
        messages name it (default: the file, else "image")."""
        if isinstance(image, str | Path):
            radiograph = read_radiograph(image)
        elif isinstance(image, Radiograph):
            radiograph = radiograph_from_array(image.pixels, image.spacing_mm)
        else:
            radiograph = radiograph_from_array(image, spacing_mm)
        what = what or (str(image) if isinstance(image, str | Path) else "image")
        return self.suggest_working(working_image(radiograph, what), what)

    def suggest_working(self, image: WorkingImage, what: str = "image") -> Suggestion:
        """suggest() for a WorkingImage: the direct and the mirrored look, averaged, then judged."""
        view = tuple(self.config.view)
        plain = whole_view(image.shape, view)
        mirrored = plain @ about((view[1] / 2, view[0] / 2), flip=True)
        with torch.inference_mode(), intra_op_threads(self.config.threads):
            logits = self.net(sample(image.level, image.shape, np.stack([plain, mirrored]), view))
        looks = []
        for matrix, heatmaps, order in ((plain, logits[0], list(range(len(LANDMARKS)))), (mirrored, logits[1], SWAP)):
            view_points, confidence = read_heatmaps(heatmaps, self.net.stride, self.config.radius_cells)
            looks.append((to_image(matrix, view_points.numpy())[list(order)], confidence.numpy()[list(order)]))
        (direct, c_direct), (flipped, c_flipped) = looks
        return self._judged(image, (direct + flipped) / 2, np.minimum(c_direct, c_flipped),
                            np.hypot(*(direct - flipped).T), what)

    def _judged(self, image: WorkingImage, points: np.ndarray, confidence: np.ndarray, disagreement: np.ndarray,
                what: str) -> Suggestion:
        """Flag the points the model should not be trusted on (module docstring); points outside are clipped."""
        height, width = image.shape
        reasons = [""] * len(LANDMARKS)

        def flag(index: int, reason: str) -> None:
            reasons[index] = reasons[index] or reason

        aspect = height / width
        if not PR_ASPECT[0] <= aspect <= PR_ASPECT[1]:
            warnings.warn(f"{what}: height/width {aspect:.2f} is unlike a panoramic radiograph's ({PR_ASPECT[0]}-"
                          f"{PR_ASPECT[1]}): a cephalogram or a photo? every suggested landmark is flagged",
                          InputWarning, stacklevel=3)
            for i in range(len(LANDMARKS)):
                flag(i, f"image not shaped like a panoramic radiograph (height/width {aspect:.2f})")
        margin = BORDER_FRACTION * width
        z = np.abs(shape_of(points) - self.shape_mean) / self.shape_sd
        for i, (x, y) in enumerate(points):
            if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
                flag(i, "outside the image (the jaw may be cut off by the frame)")
            elif min(x, y, width - 1 - x, height - 1 - y) < margin:
                flag(i, "at the image border (the jaw may be cut off by the frame)")
            if confidence[i] < CONFIDENCE_FLOOR:
                flag(i, f"unsure (confidence {confidence[i]:.2f} < {CONFIDENCE_FLOOR})")
            if disagreement[i] > DISAGREEMENT * width:
                flag(i, "the direct and the mirrored look disagree")
            if z[i].max() > SHAPE_Z:
                flag(i, f"out of place relative to the other landmarks ({z[i].max():.0f} SD from the training "
                        "radiographs)")
        clipped = np.clip(points, -0.5, [width - 0.5, height - 0.5])
        return Suggestion(clipped, confidence, np.array([bool(r) for r in reasons]), tuple(reasons),
                          (height, width), image.spacing_mm)

    # -- files --

    def save(self, path: str | Path) -> Path:
        """Write LMODEL/ whole or not at all; an existing, non-empty folder is refused."""
        with output_folder(path) as folder:
            self.write(folder)
        return Path(path)

    def write(self, folder: Path) -> None:
        """weights.safetensors and landmark-model.json into an empty folder."""
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.net.state_dict().items()}
        self.info = write_bound(folder / WEIGHTS_FILE, folder / INFO_FILE, state, self.info, LANDMARK_MODEL_FORMAT)

    @classmethod
    def load(cls, path: str | Path) -> LandmarkModel:
        """Read LMODEL/ safely (safetensors; format, every field and both hashes checked)."""
        check_type(path, (str, Path), "path", "a landmark model folder")
        folder = Path(path)
        info, state, config = read_bound(folder, WEIGHTS_FILE, INFO_FILE, LANDMARK_MODEL_FORMAT,
                                         "an osteoscreen landmark model folder (osteoscreen landmarks train)",
                                         _check_info)
        net = build_net(config, weights="none")
        try:
            net.load_state_dict(state)
        except RuntimeError as error:
            raise InputError(f"{folder / WEIGHTS_FILE}: weights do not fit the described model "
                             f"({str(error).splitlines()[0]})") from None
        net.backbone.weights_source = info["weights"]
        return cls(net, config, info)


def _check_info(info: JsonValue) -> LandmarkConfig:
    """Check every field of landmark-model.json; returns its configuration (InputError names the JSON path)."""
    info.object()
    for key in ("osteoscreen", "created"):
        info[key].string()
    if info["landmarks"].value != list(LANDMARKS):
        raise info["landmarks"].error("expected the 8 landmarks in osteoscreen's order")
    config = read_dataclass(info["config"], LandmarkConfig)
    for _, member in info["weights"].items():
        if member.value is not None:
            member.string()
    data = info["training_data"]
    data["path"].string()
    data["hash"].string()
    data["n"].integer(low=2)
    for key in ("mean", "sd"):
        rows = info["shape"][key].elements()
        if len(rows) != len(LANDMARKS) or any(len(row.elements()) != 2 for row in rows):
            raise info["shape"][key].error(f"expected {len(LANDMARKS)} pairs of numbers")
        for row in rows:
            for value in row.elements():
                value.number(low=SHAPE_SD_FLOOR if key == "sd" else None)
    info["weights_sha256"].string()
    return config
