"""Named training recipes: complete starting points for a TrainConfig, chosen by one word (`--recipe NAME`), every
field still overridable.

- `osteoscreen` (the default): TrainConfig's own defaults: frozen EfficientNet-Lite0 ImageNet features with the
  texture patch feature, the head trained with the paper's optimiser and schedule (docs/method.md says why each
  choice differs from the paper and what it gives);
- `paper`: Fan et al. 2021 as published: AlexNet with ImageNet weights (torchvision's file: `weights="imagenet"`
  reads it from torch's hub cache or downloads it; or a path), fine-tuned end to end on its pooled fc7 feature
  (4096 per patch) of 100 px patches resized to 224 px, group attention with softmax, SGD with lr 1e-4 (backbone)
  and 1e-2 (head), momentum 0.9, weight decay 1e-4, batch 32, 100 epochs, unweighted cross-entropy, augmented by
  random stretch and flips; evaluated leave-one-out (CVConfig's default protocol).

`recipe_of(config)` says which recipe a configuration follows and what it changes: config.json, metrics.json, the
report, model.json and the model card record it.
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace

from osteoscreen.core.arguments import check_range
from osteoscreen.training.config import TrainConfig

#: {recipe: the TrainConfig fields it sets, beyond TrainConfig's defaults}
RECIPES: dict[str, dict[str, object]] = {
    "osteoscreen": {},
    "paper": {"mode": "finetune", "backbone": "alexnet", "weights": "imagenet", "patch_feature": "pooled",
              "native_res": False, "attention": "softmax", "epochs": 100, "batch_size": 32, "lr_backbone": 1e-4,
              "lr_head": 1e-2, "momentum": 0.9, "weight_decay": 1e-4, "class_weighting": False},
}
DEFAULT_RECIPE = "osteoscreen"
#: What a run's seed, the machine it runs on and the method it trains are: not part of a recipe.
NOT_RECIPE = ("head", "clinical", "seed", "device", "threads")


def recipe_config(name: str = DEFAULT_RECIPE, **changes) -> TrainConfig:
    """The TrainConfig of a recipe, with `changes` (TrainConfig fields) made to it."""
    check_range(name in RECIPES, "recipe", f"one of {', '.join(RECIPES)}", name)
    return replace(TrainConfig(), **{**RECIPES[name], **changes})


def _settings(config: TrainConfig) -> dict[str, object]:
    """The fields a recipe decides, flattened (patch settings as patch.NAME)."""
    values = {spec.name: getattr(config, spec.name) for spec in fields(config)
              if spec.name not in (*NOT_RECIPE, "patch")}
    return values | {f"patch.{name}": value for name, value in asdict(config.patch).items()}


def recipe_of(config: TrainConfig) -> dict:
    """{"recipe": the recipe the configuration is closest to (the default on a tie), "changed": {setting: value}
    where it differs from it}: what a record says of how a model was trained."""
    mine, changes = _settings(config), {}
    for name in RECIPES:
        reference = _settings(recipe_config(name))
        changes[name] = {key: value for key, value in mine.items() if value != reference[key]}
    name = min(RECIPES, key=lambda recipe: len(changes[recipe]))
    return {"recipe": name, "changed": changes[name]}


def recipe_text(record: dict) -> str:
    """A recipe record in words: `paper`, or `paper, changed: epochs 5, mode frozen`."""
    changed = ", ".join(f"{key} {value}" for key, value in record["changed"].items())
    return f"{record['recipe']}{', changed: ' + changed if changed else ''}"
