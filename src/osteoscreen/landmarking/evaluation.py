"""How well a landmark model places the landmarks: k-fold cross-validation on an annotated dataset
(evaluate_landmarks), or a trained model on an annotated dataset it never saw (evaluate_trained).

Each fold trains a LandmarkModel on the other folds' radiographs (or a drawn subset of them: a learning curve) and
suggests the held-out ones' landmarks; no radiograph is ever suggested by a model that saw it.
Figures follow the ISBI 2015 cephalometric challenge: the radial error (distance between suggested and annotated
point) in mm where the pixel spacing is known (else in px, and said so), its mean and standard deviation, and the
success detection rates within 2, 2.5, 3 and 4 mm; per landmark and overall. Then what matters downstream: how much
of each annotated screening patch the suggested patch covers (intersection over union of the two squares), and,
given a screening model, how far p(osteoporosis) moves when suggested landmarks replace the annotated ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold

from osteoscreen.core.arguments import check_range, check_type
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.data.patches import PatchConfig
from osteoscreen.landmarking.geometry import WorkingImage
from osteoscreen.landmarking.model import LandmarkConfig, LandmarkModel, Suggestion, TrainingImages

SDR_MM = (2.0, 2.5, 3.0, 4.0)
#: The targets the docs hold the model to (docs/landmarks.md): mean radial error and the 4 mm success rate per
#: landmark, and the share of subjects whose screening p moves by at most P_CHANGE.
TARGET_MRE_MM, TARGET_SDR4, P_CHANGE, TARGET_P_SHARE = 2.0, 0.90, 0.05, 0.90


def patch_overlap(suggested: np.ndarray, annotated: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Intersection over union of equal squares of `side` px centred on suggested and annotated points.
    suggested, annotated [..., 2]; side broadcastable to [...]."""
    side = np.asarray(side, dtype=np.float64)
    overlap = np.clip(side[..., None] - np.abs(suggested - annotated), 0, None).prod(axis=-1)
    return overlap / (2 * side ** 2 - overlap)


@dataclass
class LandmarkEvaluation:
    """Per subject: id, fold, annotated [N, 8, 2] and suggested points with their confidence and flags, the radial
    error [N, 8] in `unit` ("mm" or "px"), patch overlap [N, 8], |change in p| [N] (None without a screening
    model), the run's record, and the working images (for drawing cases)."""

    subject_ids: list[str]
    folds: np.ndarray
    annotated: np.ndarray
    suggestions: list[Suggestion]
    errors: np.ndarray
    unit: str
    overlap: np.ndarray
    p_change: np.ndarray | None
    config: dict
    images: list[WorkingImage]

    def summary(self) -> dict:
        """metrics per landmark and overall: MRE, SD, SDR within each of SDR_MM (fractions), patch overlap (mean,
        min), the share of points flagged; and the p change (median, 90th percentile, share <= P_CHANGE)."""
        def stats(errors: np.ndarray, overlap: np.ndarray, flagged: np.ndarray) -> dict:
            entry = {"mre": float(errors.mean()), "sd": float(errors.std(ddof=1)) if errors.size > 1 else 0.0,
                     "overlap_mean": float(overlap.mean()), "overlap_min": float(overlap.min()),
                     "flagged": float(flagged.mean())}
            if self.unit == "mm":
                entry |= {f"sdr_{limit:g}mm": float((errors <= limit).mean()) for limit in SDR_MM}
            return entry

        flagged = np.stack([s.flagged for s in self.suggestions])
        out = {"unit": self.unit, "n": len(self.subject_ids), "protocol": self.config["protocol"],
               "folds": int(self.folds.max()) + 1,
               "landmarks": {name: stats(self.errors[:, i], self.overlap[:, i], flagged[:, i])
                             for i, name in enumerate(LANDMARKS)},
               "overall": stats(self.errors, self.overlap, flagged), "config": self.config}
        if self.p_change is not None:
            out["p_change"] = {"median": float(np.median(self.p_change)),
                               "p90": float(np.quantile(self.p_change, 0.9)),
                               f"share_within_{P_CHANGE:g}": float((self.p_change <= P_CHANGE).mean())}
        return out

    def targets_met(self) -> dict[str, bool]:
        """Whether each target of docs/landmarks.md holds (mm only; the p target only with a screening model)."""
        summary = self.summary()
        per = summary["landmarks"].values()
        met = {"mre_per_landmark": self.unit == "mm" and all(e["mre"] <= TARGET_MRE_MM for e in per),
               "sdr4_per_landmark": self.unit == "mm" and all(e["sdr_4mm"] >= TARGET_SDR4 for e in per)}
        if self.p_change is not None:
            met["p_change"] = summary["p_change"][f"share_within_{P_CHANGE:g}"] >= TARGET_P_SHARE
        return met


def evaluate_landmarks(data: str | Path, folds: int = 5, config: LandmarkConfig | None = None,
                       screening_model=None, patch: PatchConfig | None = None,
                       progress: Callable[[str], Callable] = lambda _: iter, weights: str = "imagenet",
                       train_size: int | None = None) -> LandmarkEvaluation:
    """k-fold cross-validated accuracy of a LandmarkModel on an annotated dataset directory (module docstring).
    The split is by radiograph (one per subject), shuffled with config.seed. screening_model: a Model whose p is
    compared between annotated and suggested landmarks; patch: the screening patch for the overlap (the model's,
    else the default 100 px); train_size: each fold's model learns from only this many of its training
    radiographs (drawn with config.seed and the fold; a learning curve), default all of them."""
    config = config or LandmarkConfig()
    training = TrainingImages.from_dataset(data, progress("images"), allow_shared_images=False)
    n = len(training.images)
    check_range(isinstance(folds, int) and 2 <= folds <= n, "folds", f"an integer in 2..{n} (the radiographs)",
                folds)
    smallest = n - -(-n // folds)  # the training radiographs of the fold with the most held out
    check_range(train_size is None or (isinstance(train_size, int) and 2 <= train_size <= smallest), "train_size",
                f"None or an integer in 2..{smallest} (the training radiographs of each of {folds} folds)",
                train_size)
    fold_of = np.zeros(n, dtype=np.int64)
    suggestions: list[Suggestion | None] = [None] * n
    splitter = KFold(folds, shuffle=True, random_state=config.seed)
    for fold, (train, test) in enumerate(progress("folds")(list(splitter.split(np.arange(n))))):
        if train_size is not None:
            train = np.sort(np.random.default_rng([config.seed, fold]).choice(train, train_size, replace=False))
        model = LandmarkModel.fit(training.subset(train), config, lambda _: iter, weights)
        for i in test:
            fold_of[i] = fold
            suggestions[i] = model.suggest_working(training.images[i], training.subject_ids[i])
    protocol = {"protocol": "k-fold", "folds": folds, "train_size": train_size, "landmark_config": asdict(config)}
    return _scored(training, suggestions, fold_of, protocol, screening_model, patch)


def evaluate_trained(model: LandmarkModel, data: str | Path, screening_model=None, patch: PatchConfig | None = None,
                     progress: Callable[[str], Callable] = lambda _: iter) -> LandmarkEvaluation:
    """The accuracy of a trained LandmarkModel on an annotated dataset it did not learn from (another cohort,
    device or file format): every radiograph suggested by `model`; the figures as evaluate_landmarks gives them.
    A dataset with the content hash of the model's training data is refused (that would be training error)."""
    check_type(model, LandmarkModel, "model")
    cohort = TrainingImages.from_dataset(data, progress("images"), allow_shared_images=False)
    if cohort.summary["hash"] == model.info["training_data"].get("hash"):
        raise InputError(f"{data}: this is the dataset the landmark model was trained on; evaluate it on another "
                         "(or cross-validate: landmarks evaluate DATA without a landmark model)")
    suggestions = [model.suggest_working(image, subject_id) for image, subject_id in
                   zip(progress("suggest")(cohort.images), cohort.subject_ids, strict=True)]
    protocol = {"protocol": "held-out", "landmark_model": model.info["training_data"],
                "landmark_config": asdict(model.config)}
    return _scored(cohort, suggestions, np.zeros(len(suggestions), dtype=np.int64), protocol, screening_model,
                   patch)


def _scored(cohort: TrainingImages, suggestions: list[Suggestion], fold_of: np.ndarray, protocol: dict,
            screening_model, patch: PatchConfig | None) -> LandmarkEvaluation:
    """The radial errors, patch overlaps and p changes of suggestions [one per radiograph of the cohort]."""
    patch = patch or (screening_model.config.patch if screening_model is not None else PatchConfig())
    annotated = np.stack(cohort.points)
    suggested = np.stack([s.points for s in suggestions])
    spacing = [image.spacing_mm for image in cohort.images]
    unit = "mm" if all(s is not None for s in spacing) else "px"
    scale = np.array([s if unit == "mm" else 1.0 for s in spacing])[:, None]
    errors = np.hypot(*(suggested - annotated).transpose(2, 0, 1)) * scale
    sides = np.array([patch.side_px(image.spacing_mm) for image in cohort.images], dtype=np.float64)[:, None]
    overlap = patch_overlap(suggested, annotated, sides)
    p_change = None
    if screening_model is not None:
        p_change = np.array([_p_change(screening_model, subject, suggestion)
                             for subject, suggestion in zip(cohort.subjects, suggestions, strict=True)])
    record = {**protocol, "patch": asdict(patch), "data": cohort.summary,
              "screening_model": None if screening_model is None else screening_model.info.get("method")}
    return LandmarkEvaluation(cohort.subject_ids, fold_of, annotated, suggestions, errors, unit, overlap, p_change,
                              record, cohort.images)


def _p_change(model, subject, suggestion: Suggestion) -> float:
    """|p(annotated landmarks) - p(suggested landmarks)| of one dataset subject under a screening model."""
    radiograph = subject.load_image()
    annotated = model.screen_subject(subject, radiograph).probability
    suggested = model.screen_subject(replace(subject, landmarks=suggestion.points.copy()), radiograph).probability
    return abs(annotated - suggested)
