"""osteoscreen: research pre-screening of osteoporosis from dental panoramic radiographs.

Implements Fan et al. 2021 (a Siamese CNN over 8 landmark patches with group attention). Not a diagnostic
device.

The public Python API (README "Python API"); names load on first use, so `import osteoscreen` stays fast:

- data: `synth(out, n, positives, seed)` writes a phantom cohort; `load_dataset(path)` returns a `Cohort` (every
  radiograph decoded once, its 8 patches cut; index it with positions like an array);
- methods, as scikit-learn estimators on a cohort: `HeadClassifier` (the CNN heads, frozen or fine-tuned),
  `Baseline` (majority, LBP KNN and ensemble, clinical), `make_estimator(method, TrainConfig)`;
- evaluation: `cross_validate(cohort, CVConfig(...))` -> `CVResult`;
- a trained model: `Model.fit(cohort, method)`, `Model.load(path)`, `model.predict(cohort)`,
  `model.screen(image, landmarks)`, `model.save(path)` -> `Screening` results; `export_model(model_dir, out)`
  writes it as ONNX, which `OnnxModel.load(out)` screens with in onnxruntime (the `onnx` extra);
- landmarks by suggestion: `LandmarkModel.fit(dataset_dir)`, `.suggest(image)` -> `Suggestion` (points,
  confidence, flags), `.save(path)`, `LandmarkModel.load(path)`; `LandmarkConfig`;
- configuration: `TrainConfig`, `CVConfig`, `PatchConfig`, `DecisionRule`; `recipe_config(name, **changes)`
  (the `osteoscreen` defaults or the `paper`'s, `RECIPES`) and `recipe_of(config)`; registries `HEADS`, `BACKBONES`,
  `METRICS`; `InputError` for bad input.
"""

from osteoscreen.core import kernels  # noqa: F401  (first: pins the CPU kernels before numpy and torch load)
from osteoscreen.core.landmarks import DEFAULT_TASK
from osteoscreen.core.version import __version__

_EXPORTS = {
    "synth": "osteoscreen.data.phantom.synthesis",
    "Cohort": "osteoscreen.data.cohort",
    "PatchConfig": "osteoscreen.data.patches",
    "Baseline": "osteoscreen.methods.estimators",
    "HeadClassifier": "osteoscreen.methods.estimators",
    "make_estimator": "osteoscreen.methods.estimators",
    "cross_validate": "osteoscreen.evaluation.experiment",
    "CVResult": "osteoscreen.evaluation.experiment",
    "CVConfig": "osteoscreen.evaluation.crossval",
    "METRICS": "osteoscreen.evaluation.metrics",
    "Model": "osteoscreen.deploy.model",
    "Screening": "osteoscreen.deploy.model",
    "export_model": "osteoscreen.deploy.onnx_export",
    "OnnxModel": "osteoscreen.deploy.onnx_model",
    "TrainConfig": "osteoscreen.training.config",
    "RECIPES": "osteoscreen.training.recipes",
    "recipe_config": "osteoscreen.training.recipes",
    "recipe_of": "osteoscreen.training.recipes",
    "DecisionRule": "osteoscreen.evaluation.operating_point",
    "HEADS": "osteoscreen.models.heads",
    "BACKBONES": "osteoscreen.models.backbones",
    "InputError": "osteoscreen.core.errors",
    "LandmarkModel": "osteoscreen.landmarking.model",
    "LandmarkConfig": "osteoscreen.landmarking.model",
    "Suggestion": "osteoscreen.landmarking.model",
}

__all__ = ["__version__", "load_dataset", *_EXPORTS]


def load_dataset(path, patch=None, task: str = DEFAULT_TASK, cache_dir=None):
    """A dataset directory (README "Dataset layout") as a `Cohort`: validated, each radiograph decoded once and cut
    into its 8 patches, the subjects `task` uses labelled for it; cache_dir: where frozen features are kept on disk
    (default: memory only). Same as `Cohort.load`."""
    from osteoscreen.data.cohort import Cohort

    return Cohort.load(path, patch, task, cache_dir)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'osteoscreen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
