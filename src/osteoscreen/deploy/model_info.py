"""model.json: every field checked on load (type, range, finiteness), and the file bound to its weights.

Binding: when a model is written, the SHA-256 of model.json's canonical form (sorted keys, no whitespace, every
member except `weights_sha256`) goes into the safetensors metadata of weights.safetensors (`model_json_sha256`),
and the SHA-256 of that weights file goes into model.json (`weights_sha256`). Editing either file breaks one of
the two hashes, so any edit of model.json is refused as tampering. This detects edits and corruption; it is not
a signature: someone who recomputes both hashes can forge a model, so share models over trusted channels.
"""

from __future__ import annotations

import json
import warnings

from osteoscreen.core.errors import InputWarning
from osteoscreen.core.landmarks import CLASSES, TASKS
from osteoscreen.data.cohort import COVARIATES_NEEDED
from osteoscreen.evaluation.operating_point import CALIBRATIONS
from osteoscreen.io.jsoninput import JsonValue, read_dataclass
from osteoscreen.models.heads import CLINICAL_HEADS, HEADS, method_name
from osteoscreen.training.config import MODES, TrainConfig, resolved_device

_HEX64 = "0123456789abcdef"
_CV_RATES = ("OPA", "NOPA", "OA", "balanced_accuracy")


def _sha256_text(value: JsonValue) -> str:
    text = value.string()
    if len(text) != 64 or set(text) - set(_HEX64):
        raise value.error(f"expected 64 lower-case hex digits, got {text[:70]!r}")
    return text


LATER_FIELDS = {"threads": 1}  # TrainConfig fields added after models existed: the value such a model meant


def read_config(info: JsonValue) -> TrainConfig:
    """The configuration a model.json's model runs with here: its training configuration with the device
    re-resolved for this machine, and the precision too: a model trained in bf16 runs in fp32 where bf16 is not
    native (emulated bf16 is several times slower and no more faithful), with a warning; model.json keeps what it
    was trained with."""
    from osteoscreen.core.precision import bf16_native

    stored = info["config"].value
    precision = stored.get("precision") if isinstance(stored, dict) else None
    if precision == "bf16" and not bf16_native(resolved_device("auto")):
        warnings.warn("this model was trained in bf16, which this machine only emulates: it runs in fp32 here (its "
                      "probabilities may differ by a few hundredths from a bf16 machine's, and so may a decision "
                      "close to the threshold)", InputWarning, stacklevel=3)
        return read_dataclass(info["config"], TrainConfig, LATER_FIELDS, device="auto", precision="fp32")
    return read_dataclass(info["config"], TrainConfig, LATER_FIELDS, device="auto")


def check_model_info(info: JsonValue) -> TrainConfig:
    """Check every field of model.json; returns its training configuration. InputError names the JSON path."""
    info.object()
    for key in ("osteoscreen", "created"):
        info[key].string()
    info["method"].string((*HEADS, *CLINICAL_HEADS))
    info["mode"].string(MODES)
    config = read_config(info)
    if (method_name(config.head, config.clinical), config.mode) != (info["method"].value, info["mode"].value):
        raise info.error("method and mode differ from the training configuration's head and mode")
    if info["covariates"].value != (list(COVARIATES_NEEDED) if config.clinical else []):
        raise info["covariates"].error(f"expected {json.dumps(list(COVARIATES_NEEDED) if config.clinical else [])}")
    info["preprocessing"].object()
    backbone = info["backbone"]
    backbone["name"].string([config.backbone])
    for tap in backbone["taps"].elements():
        tap.integer(low=0)
    for _, member in backbone["weights"].items():
        if member.value is not None:
            member.string()
    if info["classes"].value != list(CLASSES):
        raise info["classes"].error(f"expected {json.dumps(list(CLASSES))}")
    info["positive_class"].string([CLASSES[1]])
    info["threshold"].number(0, 1, open_interval=True)
    rule = info["decision_rule"]
    rule["rule"].string()
    calibration = rule["calibration"]
    method = calibration["method"].string(CALIBRATIONS)
    if method == "platt":
        calibration["intercept"].number()
        calibration["slope"].number()
    elif method == "temperature":
        calibration["temperature"].number(1e-6, 1e6)
    data = info["training_data"]
    data["path"].string()
    _sha256_text(data["hash"])
    counts = [data[key].integer(low=0) for key in ("n", "positives", "negatives")]
    if data.get("task") is not None:
        data["task"].string(TASKS)
    if counts[0] != counts[1] + counts[2] or counts[0] < 1:
        raise data.error("n must be positives + negatives, at least 1")
    data["synthetic"].boolean()
    recipe = info.get("recipe")  # (models written before recipes have none)
    if recipe is not None:
        recipe["recipe"].string()
        recipe["changed"].object()
    cross_validation = info.get("cross_validation")
    if cross_validation is not None:
        cross_validation["run"].string()
        cross_validation["protocol"].string()
        cross_validation["config"].object()
        metrics = cross_validation["metrics"]
        for key in _CV_RATES:
            metrics[key].number(0, 1)
        if metrics.get("auroc") is not None:
            metrics["auroc"].number(0, 1)
        metrics["n"].integer(low=1)
    novelty = info.get("novelty")
    if novelty is not None:
        novelty["threshold"].number(0)
        novelty["n"].integer(low=1)
        novelty["dims"].integer(low=1)
    _sha256_text(info["weights_sha256"])
    return config
