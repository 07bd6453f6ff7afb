"""Final models for new patients: train on a whole dataset, save and load safely, screen new radiographs.

A model directory (MODEL/) holds
- `weights.safetensors`: tensors only, so loading runs no code: the backbone and head (`net.*` for a fine-tuned
  network; `backbone.*`, `head.*` and the feature scaler `scaler.mean`/`scaler.std` [T] for the frozen mode);
- `model.json`: format version, method, the training configuration, preprocessing, backbone and weights
  provenance, class names, decision threshold, training-data hash, the SHA-256 of the weights file and, when
  a cross-validation RUN was given, that run's metrics for the method;
- `README.md`: the model card.
Loading checks every field of model.json and its binding to the weights (model_info.py), and refuses a model of
another format version, another preprocessing, or whose weights file does not match
the hash recorded next to it (corrupt or tampered).
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from osteoscreen import __version__
from osteoscreen.covariates import COVARIATES_NEEDED
from osteoscreen.data.dataset import Dataset, Subject
from osteoscreen.data.imageio import Radiograph
from osteoscreen.data.subject_patches import (
    SubjectPatches,
    cut_subject_patches,
    load_dataset_with_patches,
    select_task,
)
from osteoscreen.distributed import TaskResources
from osteoscreen.errors import InputError
from osteoscreen.evaluation.crossval import CVConfig, FoldRunner
from osteoscreen.jsoninput import read_json
from osteoscreen.landmarks import CLASSES, GROUPS, WHO_CLASSES
from osteoscreen.model_info import BINDING_KEY, canonical_digest, check_model_info, finite_or_null
from osteoscreen.models.backbones import Backbone
from osteoscreen.models.heads import HEADS, build_head, method_name
from osteoscreen.novelty import fit_novelty, novelty_distance, subject_features
from osteoscreen.operating_point import FIXED_RULE, DecisionRule, FittedRule, fit_rule
from osteoscreen.outputs import output_folder, subject_file_names, write_index
from osteoscreen.tasks import DEFAULT_TASK
from osteoscreen.training import (
    Cohort,
    FittedModel,
    TrainConfig,
    build_finetune_net,
    fit,
    frozen_backbone,
    head_features,
    predict_proba,
)

#: 2: model.json is bound to the weights (model_info.py); format-1 models are refused (retrain them).
MODEL_FORMAT = 3
#: model.json is a few kB; anything much larger is not one.
MAX_INFO_BYTES = 1 << 20
#: Version of the pixel pipeline (intensity percentiles, context crops, affine resampling). A model trained
#: under another version saw differently prepared patches and is refused.
PREPROCESSING_VERSION = 1
WEIGHTS_FILE, INFO_FILE, CARD_FILE = "weights.safetensors", "model.json", "README.md"
PREDICTIONS_FILE, RUN_FILE = "predictions.csv", "prediction.json"
PREDICTION_COLUMNS = ["subject_id", "p_osteoporosis", "decision", *[f"att_{g}" for g in GROUPS], "y_true",
                      "novelty_distance", "unlike_training"]


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cv_metrics(run_dir: Path, method: str, data_hash: str) -> dict:
    """The cross-validated metrics of `method` from a cv RUN on the same data (refused otherwise)."""
    path = Path(run_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read cross-validation metrics ({error})") from None
    if metrics.get("dataset", {}).get("hash") != data_hash:
        raise InputError(f"{run_dir}: cross-validated on other data than DATA (dataset hashes differ)")
    if method not in metrics.get("methods", {}):
        raise InputError(f"{run_dir}: has no results for method {method!r} "
                         f"(it has {', '.join(metrics.get('methods', {})) or 'none'})")
    return {"run": str(run_dir), "protocol": metrics["config"]["protocol"], "config": metrics["config"]["train"],
            "metrics": metrics["methods"][method]}


def save_model(model: FittedModel, out_dir: str | Path, training_data: dict, cross_validation: dict | None,
               rule: FittedRule = FIXED_RULE, novelty: dict | None = None) -> Path:
    """Write MODEL/ whole or not at all (built in a sibling folder, then renamed into place); a model is never
    overwritten: an existing, non-empty out_dir is refused."""
    with output_folder(out_dir) as folder:
        write_model_files(model, folder, training_data, cross_validation, rule, novelty)
    return Path(out_dir)


def write_model_files(model: FittedModel, folder: Path, training_data: dict, cross_validation: dict | None,
                      rule: FittedRule = FIXED_RULE, novelty: dict | None = None) -> None:
    """weights.safetensors, model.json and README.md of `model`, its decision rule and (when given) its novelty
    reference (novelty.fit_novelty: mean and precision as tensors, the threshold in model.json) into an empty
    folder."""
    from safetensors.torch import save_file

    backbone = model.net.backbone if model.net is not None else (
        model.backbone or frozen_backbone(model.config.backbone, model.config.weights, model.config.taps))
    info = {"format": MODEL_FORMAT, "osteoscreen": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "method": method_name(model.config.head, model.config.clinical), "mode": model.config.mode,
            "config": model.config.to_dict(), "covariates": list(COVARIATES_NEEDED) if model.config.clinical else [],
            "preprocessing": preprocessing(model.config, backbone),
            "backbone": {"name": model.config.backbone, "taps": list(backbone.taps),
                         "weights": backbone.weights_source},
            "classes": list(CLASSES), "positive_class": CLASSES[1], "threshold": rule.threshold,
            "decision_rule": {"rule": rule.rule, "calibration": rule.calibration},
            "training_data": training_data, "cross_validation": cross_validation,
            "novelty": None if novelty is None else {"threshold": novelty["threshold"], "n": novelty["n"],
                                                     "dims": len(novelty["mean"])}}
    info = finite_or_null(info)
    state = _state(model, backbone)
    if novelty is not None:
        state |= {f"novelty.{key}": torch.from_numpy(np.asarray(novelty[key], np.float64)).contiguous()
                  for key in ("mean", "precision")}
    save_file(state, str(folder / WEIGHTS_FILE),
              metadata={"format": str(MODEL_FORMAT), BINDING_KEY: canonical_digest(info)})
    info["weights_sha256"] = _sha256(folder / WEIGHTS_FILE)
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2, allow_nan=False) + "\n")
    (folder / CARD_FILE).write_text(model_card(info))


def model_card(info: dict) -> str:
    data = info["training_data"]
    synthetic = data.get("synthetic")
    cv = info.get("cross_validation")
    lines = [f"# osteoscreen model: {info['method']} ({info['mode']}, {info['backbone']['name']})", "",
             "## Intended use",
             "Research pre-screening of osteoporosis from dental panoramic radiographs: a flag that a patient may "
             "benefit from a DXA referral. **Not a diagnostic device**; it does not replace DXA or clinical "
             "judgement, and its output must not be used to diagnose or treat anyone.", ""]
    if synthetic:
        lines += ["**Trained on synthetic phantom radiographs.** This model has no clinical validity whatsoever: "
                  "it has never seen a real patient. It exists to test the software.", ""]
    task = data.get("task", DEFAULT_TASK)
    excluded = ", ".join(f"{count} {name}" for name, count in (data.get("excluded") or {}).items())
    lines += ["## Training data",
              f"- task `{task}`: {data['n']} subjects ({data['positives']} positive, {data['negatives']} negative"
              f"{'; excluded: ' + excluded if excluded else ''}), "
              f"{'synthetic phantom' if synthetic else 'user-supplied'}; dataset SHA-256 `{data['hash']}`", "",
              "## Method",
              f"- Fan et al. 2021 pipeline: 8 landmark patches ({_patch_text(info)}), one shared "
              f"{info['backbone']['name']} backbone, head `{info['method']}`, mode `{info['mode']}`",
              f"- backbone weights: {info['backbone']['weights'].get('weights')} "
              f"(file {info['backbone']['weights'].get('file')}, SHA-256 {info['backbone']['weights'].get('sha256')})",
              f"- decision: osteoporosis when p_osteoporosis >= {info['threshold']:.4g} "
              f"({info['decision_rule']['rule']})",
              "- novelty check: a radiograph whose features lie farther from the training subjects than any training "
              "subject from the others (Mahalanobis, Ledoit-Wolf covariance) is flagged `unlike_training`", "",
              "## Performance"]
    if cv:
        m = cv["metrics"]
        lines += [f"Cross-validated ({cv['protocol']}) on the training data: OPA (sensitivity) {m['OPA']:.3f}, "
                  f"NOPA (specificity) {m['NOPA']:.3f}, OA {m['OA']:.3f}, balanced accuracy "
                  f"{m['balanced_accuracy']:.3f}, AUROC {m['auroc']:.3f} (n = {m['n']}). 95% Wilson intervals "
                  f"are in model.json."]
    else:
        lines += ["Not measured: no cross-validation run was given at training time (`osteoscreen train --cv RUN`)."]
    lines += ["", "## Limitations",
              "- Small training cohorts give wide uncertainty; performance on other devices, populations and "
              "landmark annotators is unknown until measured there.",
              "- Landmarks must be placed as in training; patches near the image border are reflect-padded.", ""]
    return "\n".join(lines)


def _patch_text(info: dict) -> str:
    patch = info["preprocessing"]["patch"]
    side = f"{patch['patch_mm']} mm" if patch["patch_mm"] else f"{patch['patch_px']} px"
    return f"{side}, fed at {info['preprocessing']['input_size']} px"


@dataclass
class LoadedModel:
    """A model read from MODEL/: the fitted model, its model.json, and its novelty reference (or None)."""

    model: FittedModel
    info: dict
    novelty: dict | None = None


def load_model(model_dir: str | Path) -> LoadedModel:
    """Read MODEL/ safely (safetensors; hash, format and preprocessing checked) into a predict-ready model."""
    from safetensors import SafetensorError, safe_open

    model_dir = Path(model_dir)
    info_path, weights_path = model_dir / INFO_FILE, model_dir / WEIGHTS_FILE
    for path in (info_path, weights_path):
        if not path.is_file():
            raise InputError(f"{path}: not found ({model_dir} is not an osteoscreen model directory)")
    document = read_json(info_path, max_bytes=MAX_INFO_BYTES)
    model_format = document.object().get("format")
    if model_format != MODEL_FORMAT:
        raise InputError(f"{info_path}: model format {model_format!r}, this osteoscreen reads format "
                         f"{MODEL_FORMAT}; retrain the model or use the osteoscreen version that wrote it")
    config = check_model_info(document)
    info = document.value
    if _sha256(weights_path) != info["weights_sha256"]:
        raise InputError(f"{weights_path}: does not match the SHA-256 recorded in {info_path} (corrupt or altered)")
    try:
        with safe_open(str(weights_path), "pt") as handle:  # one read: the binding and the tensors
            binding = (handle.metadata() or {}).get(BINDING_KEY)
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{weights_path}: not a readable safetensors file ({error})") from None
    if binding != canonical_digest(info):
        raise InputError(f"{info_path}: edited after the model was written (its content no longer matches the "
                         f"SHA-256 bound into {WEIGHTS_FILE}); refused as tampering: restore it or retrain")
    try:
        model = _rebuild(config, state, info)
    except (KeyError, TypeError, RuntimeError) as error:
        raise InputError(f"{model_dir}: weights do not fit the described model ({error})") from None
    backbone = model.net.backbone if model.net is not None else model.backbone
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
    return LoadedModel(model, info, novelty)


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


def train_model(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, cv_run: str | Path | None = None,
                rule: DecisionRule | None = None, task: str = DEFAULT_TASK,
                progress: Callable[[str], Callable] = lambda _: iter) -> Path:
    """Train `config` on the subjects of DATA the task uses and save it as MODEL/, with its decision rule:
    calibration and threshold fitted on inner out-of-fold scores of all the subjects (operating_point), or the
    fixed 0.5."""
    with output_folder(out_dir) as folder:
        dataset, patches = load_dataset_with_patches(data_dir, config.patch, progress("patches"))
        dataset, patches, info = select_task(dataset, patches, task)
        cross_validation = None if cv_run is None else cv_metrics(Path(cv_run), config.head, info["hash"])
        cohort = Cohort(patches, config.patch)
        if config.mode == "frozen":
            cohort.frozen_features(config, progress=progress("features"))
        model = fit(cohort, np.arange(len(cohort)), config)
        fitted_rule = FIXED_RULE
        if rule is not None and not rule.fixed:
            everyone = np.arange(len(cohort))
            runner = FoldRunner(cohort, CVConfig(methods=(config.head,), rule=rule, train=config), config.seed)
            fitted_rule = fit_rule(cohort.labels, runner.inner_scores(config.head, [everyone])[0], rule)
        novelty = fit_novelty(subject_features(head_features(model, cohort, np.arange(len(cohort)))))
        write_model_files(model, folder, info, cross_validation, fitted_rule, novelty)
    return Path(out_dir)


def screen_subjects(shared: tuple[FittedModel, float, Path | None], work: list[tuple[Subject, str]]) -> list[list]:
    """predictions.csv rows of the given (subject, figure name) pairs, one subject at a time (flat memory); with a
    figure directory, each subject's figure is written there. A Ray task screens one shard this way."""
    from osteoscreen.visualise import screening_figure

    model, rule, novelty, figure_dir = shared
    rows = []
    for subject, name in work:
        radiograph = subject.load_image()
        result = screen_radiograph(model, rule, subject, radiograph, novelty)
        rows.append([subject.subject_id, f"{result.probability:.6f}", result.decision,
                     *([""] * len(GROUPS) if result.attention is None else [f"{w:.6f}" for w in result.attention]),
                     "" if subject.who is None else WHO_CLASSES[subject.who],
                     "" if result.distance is None else f"{result.distance:.3f}",
                     "" if result.unlike_training is None else ("yes" if result.unlike_training else "no")])
        if figure_dir is not None:
            screening_figure(radiograph.pixels, subject, result.patches, model.config.patch.context,
                             result.probability, result.attention, result.decision, rule.threshold,
                             figure_dir / f"{name}.png", result.unlike_training)
    return rows


@dataclass(frozen=True)
class Screening:
    """One radiograph's result: p(osteoporosis), the decision at the threshold, group attention [4] or None,
    the 8 patches cut for it, and (with a novelty reference) its distance from the training data and whether that
    exceeds the reference's threshold."""

    probability: float
    decision: str
    attention: np.ndarray | None
    patches: SubjectPatches
    distance: float | None = None
    unlike_training: bool | None = None


def screen_radiograph(model: FittedModel, rule: FittedRule, subject: Subject, radiograph: Radiograph,
                      novelty: dict | None = None) -> Screening:
    """Screen one radiograph with its subject's 8 landmarks (the model's plain view): the probability after the
    rule's calibration, the decision at its threshold, and with a novelty reference the novelty check."""
    patches = cut_subject_patches(subject, radiograph, model.config.patch)
    cohort = Cohort([patches], model.config.patch)
    features = head_features(model, cohort, [0])  # one backbone pass serves the prediction and the novelty check
    probability, attention = predict_proba(model, cohort, [0], features)
    probability = float(rule.probability(probability)[0])
    distance = None if novelty is None else float(novelty_distance(subject_features(features), novelty)[0])
    return Screening(probability, CLASSES[int(probability >= rule.threshold)],
                     None if attention is None else attention[0], patches, distance,
                     None if distance is None else distance > novelty["threshold"])


def model_rule(info: dict) -> FittedRule:
    """The decision rule a model.json records."""
    return FittedRule(info["decision_rule"]["calibration"], info["threshold"], info["decision_rule"]["rule"])


def predict(loaded: LoadedModel, dataset: Dataset, out_dir: str | Path, figures: bool = True,
            progress: Callable = iter, ray: TaskResources | None = None, address: str | None = None) -> Path:
    """Screen every subject of `dataset`: DIR/predictions.csv (input order) and, with figures,
    DIR/figures/<subject>.png. Returns the CSV's path.

    ray: screen shards of the input as Ray tasks of these resources (on `address`, or a local Ray instance);
    the rows come back in input order, so the CSV equals a local run's. Figures are written by the tasks: on a
    cluster, DIR must be on storage every node shares.
    """
    out_dir = Path(out_dir)
    if loaded.model.config.clinical:
        lacking = [s.subject_id for s in dataset.subjects if s.age is None or s.sex is None]
        if lacking:
            raise InputError(f"this model ({loaded.info['method']}) needs age and sex for every radiograph; "
                             f"{len(lacking)} lack them ({', '.join(map(repr, lacking[:5]))}"
                             f"{', ...' if len(lacking) > 5 else ''}): fill the age and sex columns of subjects.csv, "
                             "or give --age and --sex with a single image")
    model = replace(loaded.model, config=replace(loaded.model.config, views=1))  # the plain view only
    rule = model_rule(loaded.info)
    ids = [s.subject_id for s in dataset.subjects]
    names = subject_file_names(ids)
    with output_folder(out_dir, replaces=RUN_FILE) as folder:
        figure_dir = folder / "figures" if figures else None
        if figure_dir is not None:
            figure_dir.mkdir()
            write_index(figure_dir, ids, [f"{name}.png" for name in names])
        shared = (model, rule, loaded.novelty, figure_dir and figure_dir.resolve())
        work = list(zip(dataset.subjects, names, strict=True))
        if ray is None:
            rows = [row for item in progress(work) for row in screen_subjects(shared, [item])]
        else:
            rows = _screen_on_ray(shared, work, ray, address, progress)
        with open(folder / PREDICTIONS_FILE, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(PREDICTION_COLUMNS)
            writer.writerows(rows)
        (folder / RUN_FILE).write_text(json.dumps({"model": loaded.info["method"],
                                                   "model_created": loaded.info["created"],
                                                   "threshold": rule.threshold, "decision_rule": rule.rule,
                                                   "calibration": rule.calibration, "n": len(rows)}, indent=2))
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
