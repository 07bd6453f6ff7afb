"""A trained model: fit it on a cohort, save and load it safely, and screen radiographs with it.

`Model` is the one object the command line (`train`, `predict`), the web page and notebooks use:
`Model.fit(cohort, method)`, `Model.load(path)`, `model.save(path)`, `model.predict(cohort)`,
`model.screen(image, landmarks)`. It holds the fitted network (training.fitted.FittedModel), its decision rule
(operating_point: calibration and threshold), its novelty reference (novelty) and its record (`info`: what
model.json holds).

A model directory (MODEL/) holds
- `weights.safetensors`: tensors only, so loading runs no code: the backbone and head (`net.*` for a fine-tuned
  network; `backbone.*`, `head.*` and the feature scaler `scaler.mean`/`scaler.std` [T] for the frozen mode), the
  covariate scaler of a frozen +clinical head and the novelty reference (`novelty.mean`, `novelty.precision`);
- `model.json`: format version, method, the training configuration, preprocessing, backbone and weights
  provenance, class names, decision rule, training-data summary, the SHA-256 of the weights file and, when a
  cross-validation RUN was given, that run's metrics for the method;
- `README.md`: the model card (model_card).
Loading checks every field of model.json and its binding to the weights (model_info), and refuses a model of
another format version, another preprocessing, or whose weights file does not match the hash recorded next to it
(corrupt or tampered).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import CLASSES, DEFAULT_TASK, LANDMARKS, decision
from osteoscreen.core.version import __version__
from osteoscreen.data.cohort import COVARIATES_NEEDED, Cohort
from osteoscreen.data.dataset import Subject, checked_covariates, read_landmark_file
from osteoscreen.data.subject_patches import SubjectPatches, cut_subject_patches
from osteoscreen.deploy.model_card import model_card
from osteoscreen.deploy.model_info import check_model_info
from osteoscreen.deploy.novelty import fit_novelty, novelty_distance, subject_features
from osteoscreen.evaluation.crossval import CVConfig, FoldRunner
from osteoscreen.evaluation.operating_point import FIXED_RULE, DecisionRule, FittedRule, fit_rule
from osteoscreen.features.frozen import frozen_backbone, frozen_features
from osteoscreen.io.bound_files import canonical_digest, read_bound, write_bound
from osteoscreen.io.imageio import Radiograph, radiograph_from_array, read_radiograph
from osteoscreen.io.outputs import finite_or_null, output_folder
from osteoscreen.models.backbones import Backbone
from osteoscreen.models.heads import HEADS, build_head, head_of, method_name
from osteoscreen.reporting.runs import run_metrics
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.finetune import build_finetune_net
from osteoscreen.training.fit import fit, head_features, predict_proba
from osteoscreen.training.fitted import FittedModel
from osteoscreen.training.recipes import recipe_of

#: 2: model.json is bound to the weights (model_info.py); 3: decision rule, novelty reference and covariates.
MODEL_FORMAT = 3
#: Version of the pixel pipeline (intensity percentiles, context crops, affine resampling). A model trained
#: under another version saw differently prepared patches and is refused.
PREPROCESSING_VERSION = 1
WEIGHTS_FILE, INFO_FILE, CARD_FILE = "weights.safetensors", "model.json", "README.md"


@dataclass(frozen=True)
class Screening:
    """One radiograph's result: p(osteoporosis) after the model's calibration, the decision at its threshold,
    group attention [4] (condyle, angle, premolar, tuberosity) or None, the 8 patches cut for it, and (with a novelty
    reference) its distance from the training data and whether that exceeds the reference's threshold."""

    subject_id: str
    probability: float
    decision: str
    attention: np.ndarray | None
    patches: SubjectPatches
    distance: float | None = None
    unlike_training: bool | None = None


class Model:
    """A trained model with its decision rule, novelty reference (or None) and record (model.json's content:
    `info`, built from the fitted model, the training data's summary and cross-validated metrics unless given)."""

    def __init__(self, fitted: FittedModel, rule: FittedRule = FIXED_RULE, novelty: dict | None = None,
                 training_data: dict | None = None, cross_validation: dict | None = None, info: dict | None = None):
        self.fitted = fitted
        self.rule = rule
        self.novelty = novelty
        self.info = info if info is not None else _info(fitted, rule, novelty, training_data or {}, cross_validation)
        # prediction sees the plain view only (frozen mode: one view's features, not the training views)
        self._predictor = replace(fitted, config=replace(fitted.config, views=1))

    @property
    def method(self) -> str:
        return self.info["method"]

    @property
    def config(self) -> TrainConfig:
        return self.fitted.config

    @property
    def task(self) -> str:
        """The binary question the model answers (landmarks.TASKS)."""
        return self.info["training_data"].get("task") or DEFAULT_TASK

    @property
    def digest(self) -> str:
        """What identifies the network that computed a result (in DICOM results: their UIDs and algorithm): the
        SHA-256 of the weights file, or of the record of a model not saved yet."""
        return self.info.get("weights_sha256") or canonical_digest(self.info)

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    @property
    def covariates(self) -> tuple[str, ...]:
        """What each radiograph needs beside its landmarks: ("age", "sex") for a +clinical model, else ()."""
        return COVARIATES_NEEDED if self.config.clinical else ()

    @classmethod
    def fit(cls, cohort: Cohort, method: str = "group-attention", config: TrainConfig | None = None,
            rule: DecisionRule | None = None, cross_validation: dict | None = None,
            progress: Callable[[str], Callable] = lambda _: iter) -> Model:
        """Train `method` (a head, or head+clinical) on every subject of the cohort with config's options (default:
        TrainConfig()), with its decision rule: calibration and threshold fitted on inner out-of-fold scores of
        all the subjects (operating_point), or the fixed 0.5; and its novelty reference. cross_validation: the
        cv metrics to record (runs.run_metrics)."""
        parsed = head_of(method)
        if parsed is None:
            raise InputError(f"a model is a CNN head: choose one of {', '.join(HEADS)} (optionally +clinical), "
                             f"got {method!r}")
        method = method_name(*parsed)
        config = replace(config or TrainConfig(), head=parsed[0], clinical=parsed[1], patch=cohort.patch_config)
        cohort = cohort if cohort.root is cohort else cohort.detached()
        everyone = np.arange(len(cohort))
        if config.mode == "frozen":
            frozen_features(cohort, config, progress=progress("features"))
        fitted = fit(cohort, everyone, config)
        fitted_rule = FIXED_RULE
        if rule is not None and not rule.fixed:  # fitted on inner scores of this method, covariates included
            runner = FoldRunner(cohort, CVConfig(methods=(method,), rule=rule, train=config), config.seed)
            fitted_rule = fit_rule(cohort.labels, runner.inner_scores(method, [everyone])[0], rule)
        novelty = fit_novelty(subject_features(head_features(fitted, cohort, everyone)))
        return cls(fitted, fitted_rule, novelty, cohort.summary(), cross_validation)

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Read MODEL/ safely (safetensors; hash, format and preprocessing checked)."""
        return _load(Path(path))

    def save(self, path: str | Path) -> Path:
        """Write MODEL/ whole or not at all (built in a sibling folder, then renamed into place); a model is never
        overwritten: an existing, non-empty folder is refused."""
        with output_folder(path) as folder:
            self.write(folder)
        return Path(path)

    def write(self, folder: Path) -> None:
        """weights.safetensors, model.json and README.md into an empty folder."""
        if "hash" not in self.info["training_data"]:
            raise InputError("a saved model records its training data: fit it on a cohort loaded from a dataset "
                             "directory (osteoscreen.load_dataset)")
        state = _state(self.fitted, _backbone(self.fitted))
        if self.novelty is not None:
            state |= {f"novelty.{key}": torch.from_numpy(np.asarray(self.novelty[key], np.float64)).contiguous()
                      for key in ("mean", "precision")}
        info = write_bound(folder / WEIGHTS_FILE, folder / INFO_FILE, state, self.info, MODEL_FORMAT)
        (folder / CARD_FILE).write_text(model_card(info))

    def check_covariates(self, subjects: Sequence[Subject | SubjectPatches]) -> None:
        """Refuse subjects (of a dataset or a cohort) without age or sex when the model needs them (naming them)."""
        if not self.covariates:
            return
        lacking = [s.subject_id for s in subjects if s.age is None or s.sex is None]
        if lacking:
            raise InputError(f"this model ({self.method}) needs age and sex for every radiograph; "
                             f"{len(lacking)} lack them ({', '.join(map(repr, lacking[:5]))}"
                             f"{', ...' if len(lacking) > 5 else ''}): fill the age and sex columns of subjects.csv, "
                             "or give age= and sex= with a single image")

    def predict(self, cohort: Cohort) -> list[Screening]:
        """Screen every subject of a cohort (its labels are not used)."""
        return self._screen(cohort)

    def screen(self, image: str | Path | Radiograph | np.ndarray, landmarks: Mapping | np.ndarray | str | Path,
               age: float | None = None, sex: str | None = None, spacing_mm: float | None = None,
               subject_id: str = "radiograph") -> Screening:
        """Screen one radiograph. image: a file (DICOM, PNG, JPEG, TIFF), a decoded Radiograph, or [H, W] pixels in
        [0, 1]; landmarks: {landmark: (x, y)} in pixels, an [8, 2] array in LANDMARKS order, or a landmark file
        (CSV landmark,x,y or JSON); age and sex: for +clinical models."""
        age, sex = checked_covariates(age, sex)
        if spacing_mm is not None and not (isinstance(spacing_mm, int | float) and math.isfinite(spacing_mm)
                                           and spacing_mm > 0):
            raise InputError(f"spacing_mm: expected a positive number of millimetres, got {spacing_mm!r}")
        if isinstance(image, Radiograph):
            radiograph = radiograph_from_array(image.pixels, image.spacing_mm)
        elif isinstance(image, str | Path):
            radiograph = read_radiograph(image)
        else:
            radiograph = radiograph_from_array(image, spacing_mm)
        if isinstance(landmarks, str | Path):
            landmarks = read_landmark_file(Path(landmarks))
        if isinstance(landmarks, Mapping):
            missing = [name for name in LANDMARKS if name not in landmarks]
            if missing:
                raise InputError(f"landmarks: missing {', '.join(missing)}")
            landmarks = [landmarks[name] for name in LANDMARKS]
        try:
            points = np.asarray(landmarks, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"landmarks: expected {len(LANDMARKS)} (x, y) points as numbers") from None
        if points.shape != (len(LANDMARKS), 2):
            raise InputError(f"landmarks: expected {len(LANDMARKS)} (x, y) points, got shape {points.shape}")
        if not np.isfinite(points).all():
            raise InputError("landmarks: every coordinate must be a finite number")
        subject = Subject(subject_id, Path(subject_id), None, points, spacing_mm, age=age, sex=sex)
        return self.screen_subject(subject, radiograph)

    def screen_subject(self, subject: Subject, radiograph: Radiograph) -> Screening:
        """Screen a dataset subject's decoded radiograph (its 8 landmarks, and age and sex for +clinical models)."""
        patches = cut_subject_patches(subject, radiograph, self.config.patch)
        return self._screen(Cohort([patches], self.config.patch))[0]

    def _screen(self, cohort: Cohort) -> list[Screening]:
        """Prediction, rule and novelty check of every subject of a cohort, from one backbone pass each."""
        self.check_covariates(cohort.patches)
        cohort = cohort if cohort.root is cohort else cohort.detached()
        probability, attention, distance = self.outputs(cohort)
        return [Screening(patches.subject_id, float(p),
                          decision(p, self.rule.threshold, f"{patches.subject_id}: p(osteoporosis)"),
                          None if attention is None else attention[i], patches,
                          None if distance is None else float(distance[i]),
                          None if distance is None else bool(distance[i] > self.novelty["threshold"]))
                for i, (patches, p) in enumerate(zip(cohort.patches, probability, strict=True))]

    def outputs(self, cohort: Cohort) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The network's answers for every subject of a (detached) cohort: p(osteoporosis) [m] after the model's
        calibration, group attention [m, 4] (None for heads without), the novelty distance [m] (None without a
        novelty reference). deploy.onnx_model.OnnxModel gives the same from an exported graph."""
        everyone = np.arange(len(cohort))
        features = head_features(self._predictor, cohort, everyone)
        probability, attention = predict_proba(self._predictor, cohort, everyone, features)
        distance = None if self.novelty is None else novelty_distance(subject_features(features), self.novelty)
        return self.rule.probability(probability), attention, distance


def train_model(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, cv_run: str | Path | None = None,
                rule: DecisionRule | None = None, task: str = DEFAULT_TASK,
                progress: Callable[[str], Callable] = lambda _: iter) -> Path:
    """`osteoscreen train`: the subjects of DATA the task uses, `Model.fit`, saved as MODEL/ (checked before any
    work; written whole or not at all). cv_run: a cv RUN on the same data whose metrics go into the model card."""
    method = method_name(config.head, config.clinical)
    with output_folder(out_dir) as folder:
        cohort = Cohort.load(data_dir, config.patch, task, progress=progress("patches"))
        cross_validation = None if cv_run is None else run_metrics(Path(cv_run), method, cohort.info["hash"])
        Model.fit(cohort, method, config, rule, cross_validation, progress).write(folder)
    return Path(out_dir)


def _backbone(fitted: FittedModel) -> Backbone:
    if fitted.net is not None:
        return fitted.net.backbone
    return fitted.backbone or frozen_backbone(fitted.config.backbone, fitted.config.weights, fitted.config.taps)


def _info(fitted: FittedModel, rule: FittedRule, novelty: dict | None, training_data: dict,
          cross_validation: dict | None) -> dict:
    """model.json's content (without the weights file's SHA-256, added when it is written)."""
    config, backbone = fitted.config, _backbone(fitted)
    info = {"format": MODEL_FORMAT, "osteoscreen": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "method": method_name(config.head, config.clinical), "mode": config.mode,
            "config": config.to_dict(), "recipe": recipe_of(config),
            "covariates": list(COVARIATES_NEEDED) if config.clinical else [],
            "preprocessing": preprocessing(config, backbone),
            "backbone": {"name": config.backbone, "taps": list(backbone.taps), "weights": backbone.weights_source},
            "classes": list(CLASSES), "positive_class": CLASSES[1], "threshold": rule.threshold,
            "decision_rule": {"rule": rule.rule, "calibration": rule.calibration},
            "training_data": training_data, "cross_validation": cross_validation,
            "novelty": None if novelty is None else {"threshold": novelty["threshold"], "n": novelty["n"],
                                                     "dims": len(novelty["mean"])}}
    return finite_or_null(info)


def _load(model_dir: Path) -> Model:
    info, state, config = read_bound(model_dir, WEIGHTS_FILE, INFO_FILE, MODEL_FORMAT,
                                     "an osteoscreen model directory", check_model_info)
    info_path, weights_path = model_dir / INFO_FILE, model_dir / WEIGHTS_FILE
    try:
        fitted = _rebuild(config, state, info)
    except (KeyError, TypeError, RuntimeError) as error:
        raise InputError(f"{model_dir}: weights do not fit the described model ({error})") from None
    backbone = _backbone(fitted)
    if preprocessing(config, backbone) != info["preprocessing"]:
        raise InputError(f"{info_path}: preprocessing {info['preprocessing']} differs from this osteoscreen's "
                         f"{preprocessing(config, backbone)}; retrain the model with this version")
    novelty = None
    if info.get("novelty") is not None:
        dims = info["novelty"]["dims"]
        mean, precision = state.get("novelty.mean"), state.get("novelty.precision")
        if mean is None or precision is None or mean.shape != (dims,) or precision.shape != (dims, dims):
            raise InputError(f"{weights_path}: the novelty reference does not fit {info_path}'s $.novelty.dims")
        novelty = {"mean": mean.numpy(), "precision": precision.numpy(), "threshold": info["novelty"]["threshold"]}
    rule = FittedRule(info["decision_rule"]["calibration"], info["threshold"], info["decision_rule"]["rule"])
    return Model(fitted, rule, novelty, info=info)


def preprocessing(config: TrainConfig, backbone: Backbone) -> dict:
    """What a radiograph goes through before the network; must match between training and prediction."""
    return {"version": PREPROCESSING_VERSION, "patch": asdict(config.patch), "input_size": config.input_size(backbone),
            "intensity": "image percentiles 0.5 and 99.5 -> 0 and 1", "grey_to_rgb": "replicate",
            "normalise_mean": list(backbone.net.mean), "normalise_std": list(backbone.net.std)}


def _state(model: FittedModel, backbone: Backbone) -> dict[str, torch.Tensor]:
    if model.net is not None:
        items = {f"net.{k}": v for k, v in model.net.state_dict().items()}
    else:
        items = {**{f"backbone.{k}": v for k, v in backbone.net.state_dict().items()},
                 **{f"head.{k}": v for k, v in model.head.state_dict().items()},
                 "scaler.mean": model.feature_mean, "scaler.std": model.feature_std}
        if model.covariate_mean is not None:
            items |= {"covariates.mean": model.covariate_mean, "covariates.std": model.covariate_std}
    return {k: v.detach().cpu().contiguous().clone() for k, v in items.items()}


def _rebuild(config: TrainConfig, state: dict[str, torch.Tensor], info: dict) -> FittedModel:
    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    if config.head not in HEADS:
        raise KeyError(f"unknown head {config.head!r}")
    untrained = replace(config, weights="none")
    if config.mode == "finetune":
        net, _ = build_finetune_net(untrained)
        net.load_state_dict(part("net."))
        net.backbone.weights_source = info["backbone"]["weights"]
        return FittedModel(config, net.head, net.eval())
    backbone = Backbone(config.backbone, "none", config.taps)
    backbone.net.load_state_dict(part("backbone."))
    backbone.weights_source = info["backbone"]["weights"]
    head = build_head(config.head, backbone.texture_dim, config.hidden, config.attention, config.clinical)
    head.load_state_dict(part("head."))
    return FittedModel(config, head.eval(), None, state["scaler.mean"], state["scaler.std"], backbone.eval(),
                       covariate_mean=state["covariates.mean"] if config.clinical else None,
                       covariate_std=state["covariates.std"] if config.clinical else None)


