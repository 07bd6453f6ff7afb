"""The RUN folder of `osteoscreen cv`: cross-validation (evaluation.experiment) kept on disk, resumable, reported.

RUN/config.json pins the configuration (a different one in the same RUN is refused; options added after a run
was made are read at the value that means what it did). Each fold's record is written atomically to
RUN/folds/seed-<seed>/<method>/<fold>.json as soon as it finishes, leave-pair-out results to
RUN/lpo/seed-<seed>/<method>.json; a rerun of the same command skips what is there, so an interrupted run ends
with the same files as an uninterrupted one, whichever backend ran which fold. At the end: predictions.csv,
metrics.json and report.html; frozen features are cached in RUN/cache.
"""

from __future__ import annotations

import contextlib
import csv
import json
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from osteoscreen.core.errors import InputError, InputWarning
from osteoscreen.core.kernels import kernel_record
from osteoscreen.core.landmarks import CLASSES, DEFAULT_TASK, GROUPS, THRESHOLD, decision
from osteoscreen.core.version import __version__
from osteoscreen.data.cohort import Cohort
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.evaluation.execution import LocalBackend, RayBackend
from osteoscreen.evaluation.experiment import check_cohort, cross_validate
from osteoscreen.evaluation.operating_point import DecisionRule
from osteoscreen.evaluation.splits import Fold
from osteoscreen.io.outputs import atomic_path, exclusive, output_folder_in_place, strict_json, write_text_atomic
from osteoscreen.reporting.report import build_report
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.recipes import recipe_of

ATTENTION_COLUMNS = [f"att_{group}" for group in GROUPS]
#: cv's predictions.csv: one row per subject, method, fold and seed. subject_id, y_true (the subject's class in
#: the run's task), p_osteoporosis (out of fold, after the fold's calibration), decision (the class at the fold's
#: threshold) and att_<group> are named and mean what they do in predict's (prediction_writers.PREDICTION_COLUMNS).
PREDICTION_COLUMNS = ["subject_id", "method", "fold", "y_true", "p_osteoporosis", "decision", *ATTENTION_COLUMNS,
                      "seed"]


@dataclass
class CVOutcome:
    run_dir: Path
    table: str
    metrics: dict
    padded_patches: int


class RunFolder:
    """The FoldStore of a RUN folder: fold records and leave-pair-out results as JSON files."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def _fold_path(self, seed: int, method: str, fold: str) -> Path:
        return self.run_dir / "folds" / f"seed-{seed}" / method / f"{fold}.json"

    def _lpo_path(self, seed: int, method: str) -> Path:
        return self.run_dir / "lpo" / f"seed-{seed}" / f"{method}.json"

    def fold(self, seed: int, method: str, fold: Fold) -> dict | None:
        """The fold's record, or None when it is absent or damaged (then with a warning naming the file: a fold
        record is only a cache of work, so the fold is computed again and the file replaced)."""
        path = self._fold_path(seed, method, fold.name)
        record = _read_cached(path)
        problem = None if record is None else _fold_problem(record, seed, method, fold)
        if problem:
            _damaged(path, problem)
            return None
        return record

    def save_fold(self, record: dict) -> None:
        _write_json(self._fold_path(record["seed"], record["method"], record["fold"]), record)

    def lpo(self, seed: int, method: str) -> dict | None:
        path = self._lpo_path(seed, method)
        result = _read_cached(path)
        if result is not None and not (isinstance(result.get("auroc"), float) and isinstance(result.get("pairs"), int)):
            _damaged(path, "no auroc and pairs")
            return None
        return result

    def save_lpo(self, seed: int, method: str, result: dict) -> None:
        write_text_atomic(self._lpo_path(seed, method), json.dumps(result) + "\n")


def _read_cached(path: Path) -> dict | None:
    """A JSON object kept in the RUN folder, or None when absent or unreadable (with a warning naming it)."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        _damaged(path, f"not readable JSON: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
        return None
    if not isinstance(value, dict):
        _damaged(path, f"a JSON {type(value).__name__}, not an object")
        return None
    return value


def _damaged(path: Path, problem: str) -> None:
    warnings.warn(f"{path}: damaged ({problem}); computed again and replaced", InputWarning, stacklevel=3)


def _fold_problem(record: dict, seed: int, method: str, fold: Fold) -> str | None:
    """What is wrong with a fold record read back for (seed, method, fold), or None."""
    for key, expected in (("seed", seed), ("method", method), ("fold", fold.name), ("test", fold.test.tolist())):
        if record.get(key) != expected:
            return f"its {key} is not this fold's"
    n = len(fold.test)
    p, attention = record.get("p"), record.get("attention")
    if not (isinstance(p, list) and len(p) == n and all(isinstance(v, int | float) for v in p)):
        return f"p is not {n} number(s)"
    if attention is not None and not (isinstance(attention, list) and len(attention) == n and all(
            isinstance(row, list) and len(row) == len(GROUPS) and all(isinstance(v, int | float) for v in row)
            for row in attention)):
        return f"attention is not {n} x {len(GROUPS)} number(s)"
    if "threshold" in record and not isinstance(record["threshold"], int | float):
        return "its threshold is not a number"
    return None


def run_cross_validation(data_dir: str | Path, run_dir: str | Path, config: CVConfig,
                         progress: Callable[[str], Callable] = lambda _: iter,
                         backend: LocalBackend | RayBackend | None = None,
                         log: Callable[[str], None] = lambda _: None) -> CVOutcome:
    """Run (or resume) the whole cross-validation of DATA in RUN and write every output file.

    metrics.json's "methods" and "comparisons" are the first seed's; "seeds" holds every seed's metrics and
    "spread" their mean, standard deviation, min and max.
    """
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    created = not run_dir.exists()
    output_folder_in_place(run_dir)
    try:
        with exclusive(run_dir, "this cv RUN folder"):
            return _run_locked(data_dir, run_dir, config, progress, backend, log)
    except BaseException:
        if created:  # a run refused (or stopped) before it wrote anything leaves no folder behind
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise


def _run_locked(data_dir: Path, run_dir: Path, config: CVConfig, progress: Callable[[str], Callable],
                backend: LocalBackend | RayBackend | None, log: Callable[[str], None]) -> CVOutcome:
    cohort = Cohort.load(data_dir, config.train.patch, config.task, cache_dir=run_dir / "cache",
                         allow_shared_images=False, progress=progress("patches"))
    check_cohort(cohort, config)  # a refused configuration writes nothing
    record = prepare_run(run_dir, config, cohort.info)
    result = cross_validate(cohort, config, backend, RunFolder(run_dir), progress, log)
    labels, subject_ids = result.labels, result.subject_ids
    config_dict = {**asdict(config), "recipe": recipe_of(config.train), "versions": record["versions"],
                   "kernels": kernel_record(),
                   "rule_text": None if config.rule.fixed else config.rule.describe()}
    write_predictions(run_dir / "predictions.csv", result.records, subject_ids, labels)
    payload = {"dataset": cohort.info, "config": asdict(config), "recipe": config_dict["recipe"],
               "kernels": config_dict["kernels"],
               "methods": result.metrics,
               "comparisons": result.comparisons,
               "seeds": [{"seed": seed, "methods": result.seed_metrics[seed]} for seed in config.seeds],
               "spread": result.spread, "training_curves": result.training_curves,
               "decision_curves": result.decision_curves}
    write_text_atomic(run_dir / "metrics.json", strict_json(payload))
    write_text_atomic(run_dir / "report.html", build_report(result, cohort, config_dict))
    return CVOutcome(run_dir, result.table(), result.metrics, cohort.padded_patches)


def write_predictions(path: Path, records: dict[int, dict], subject_ids: list[str], labels) -> None:
    """records: {seed: {method: [fold records]}} -> one row per subject, method, fold and seed."""
    with atomic_path(path) as partial, open(partial, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PREDICTION_COLUMNS)
        for seed, by_method in records.items():
            for method, folds in by_method.items():
                for record in folds:
                    attention = record["attention"] or [None] * len(record["test"])
                    threshold = record.get("threshold", THRESHOLD)  # the fold's fitted threshold, if any
                    what = f"{method} fold {record['fold']}: p(osteoporosis)"
                    for index, probability, weights in zip(record["test"], record["p"], attention, strict=True):
                        weights_text = [""] * len(GROUPS) if weights is None else [f"{w:.6f}" for w in weights]
                        writer.writerow([subject_ids[index], method, record["fold"], CLASSES[labels[index]],
                                         f"{probability:.6f}", decision(probability, threshold, what), *weights_text,
                                         seed])


def package_versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ["torch", "numpy", "scipy", "scikit-learn", "scikit-image", "pydicom", "pillow", "safetensors"]
    return {"python": platform.python_version(), "osteoscreen": __version__, **{n: version(n) for n in names}}


def _write_json(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def prepare_run(run_dir: Path, config: CVConfig, dataset_info: dict) -> dict:
    """Write RUN/config.json, or check that an existing one holds the same configuration."""
    identity = {"dataset_hash": dataset_info["hash"], "cv": asdict(config)}
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as read back from disk
    path = run_dir / "config.json"
    if path.exists():
        stored = _read_config(path)
        previous = _with_later_options(stored.get("identity"))
        if previous != identity:
            differing = sorted(k for k in set(previous or {}) | set(identity)
                               if (previous or {}).get(k) != identity.get(k))
            detail = _first_difference(previous or {}, identity)
            raise InputError(f"{run_dir} holds results of a different configuration ({', '.join(differing)}"
                             f"{': ' + detail if detail else ''}); use another output folder or delete it")
        return stored
    record = {"identity": identity, "recipe": recipe_of(config.train), "dataset": dataset_info,
              "versions": package_versions(), "kernels": kernel_record(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_json(path, record)
    return record


def _read_config(path: Path) -> dict:
    """A RUN's config.json, refused (naming it and what to do) when it is not the record a run writes: it pins
    what the folds were computed with, so it is never guessed or rewritten."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        stored, reason = None, f"not readable JSON ({str(error).splitlines()[0] if str(error) else error!r})"
    else:
        reason = "no identity of a cv run in it"
    if not (isinstance(stored, dict) and isinstance(stored.get("identity"), dict)
            and isinstance(stored.get("versions"), dict)):
        raise InputError(f"{path}: damaged ({reason}); the results in {path.parent} cannot be trusted to match a "
                         "configuration: use another output folder, or delete the folder to start again")
    return stored


def _later_options() -> dict:
    """CVConfig options added after runs existed, with the value that means what such a run did."""
    return json.loads(json.dumps({"prevalence": None, "rule": asdict(DecisionRule()), "leave_pair_out": False,
                                  "task": DEFAULT_TASK}))


def _with_later_options(identity: dict | None) -> dict | None:
    """A stored run identity with options it predates filled in at their neutral value, so that a run made before
    an option existed resumes (and its report is rebuilt) when the option is left at that value."""
    if not isinstance(identity, dict) or not isinstance(identity.get("cv"), dict):
        return identity
    cv = {**_later_options(), **identity["cv"]}
    train = cv.get("train")
    if isinstance(train, dict):
        later = {"clinical": False, "threads": 1}  # a run before +clinical methods trained plain heads; before
        # TrainConfig.threads, 1 is the nearest meaning (frozen heads of one fold already trained on one thread)
        if train.get("mode") == "frozen":
            later["patch_feature"] = TrainConfig().patch_feature  # frozen mode never read it
        cv["train"] = {**later, **train}
    return {**identity, "cv": cv}


def _first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return ""
    return f"{prefix.rstrip('.')} was {a!r}, now {b!r}" if a != b else ""


def run_metrics(run_dir: Path, method: str, data_hash: str) -> dict:
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
