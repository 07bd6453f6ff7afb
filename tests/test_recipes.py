"""Training recipes by name (`--recipe paper`), and a training option declared once (TrainConfig's fields make the
estimator's parameters and the command line's flags)."""

import json
from dataclasses import asdict, fields

import pytest

import osteoscreen
from osteoscreen.cli.entry import flags_of, main
from osteoscreen.cli.options import train_config
from osteoscreen.cli.parser import build_parser
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.models.backbones import AlexNet
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.recipes import RECIPES, recipe_config, recipe_of, recipe_text


def test_the_paper_recipe_is_the_papers_stated_hyperparameters():
    """Fan et al. 2021, section 3: AlexNet (ImageNet), fine-tuned; 100 x 100 px patches resized to 224 x 224,
    augmented by random stretch and flips; fc7 features; SGD, lr 1e-4 (backbone) and 1e-2 (head), momentum 0.9,
    weight decay 1e-4; batch 32; 100 epochs; cross-entropy; leave-one-out."""
    paper = recipe_config("paper")
    assert (paper.backbone, paper.weights, paper.mode, paper.patch_feature) == ("alexnet", "imagenet", "finetune",
                                                                                "pooled")
    assert (paper.lr_backbone, paper.lr_head, paper.momentum, paper.weight_decay) == (1e-4, 1e-2, 0.9, 1e-4)
    assert (paper.batch_size, paper.epochs, paper.class_weighting) == (32, 100, False)
    assert (paper.head, paper.attention, paper.clinical) == ("group-attention", "softmax", False)
    assert paper.patch.patch_px == 100 and paper.patch.patch_mm is None and not paper.native_res
    assert paper.input_size(AlexNet) == 224 and AlexNet.feature_dim == 4096  # fc7, fed at 224 px
    assert paper.patch.stretch > 0 and paper.patch.flip_probability > 0  # the augmentation
    assert CVConfig().protocol == "loo"
    assert recipe_config() == TrainConfig() and RECIPES["osteoscreen"] == {}  # the default is TrainConfig's own


def test_a_record_names_the_nearest_recipe_and_what_was_changed():
    assert recipe_of(recipe_config("paper")) == {"recipe": "paper", "changed": {}}
    changed = recipe_of(recipe_config("paper", epochs=5, seed=3, threads=2))  # a seed or a machine is no change
    assert changed == {"recipe": "paper", "changed": {"epochs": 5}}
    assert recipe_text(changed) == "paper, changed: epochs 5"
    assert recipe_of(TrainConfig(mode="finetune", head="abmil")) == {"recipe": "osteoscreen",
                                                                     "changed": {"mode": "finetune"}}
    with pytest.raises(ValueError, match="recipe: expected one of osteoscreen, paper, got 'fan'"):
        recipe_config("fan")


def test_the_command_line_starts_from_the_recipe_and_every_flag_changes_it():
    parser = build_parser()
    args = parser.parse_args(["cv", "DATA", "--out", "O", "--recipe", "paper", "--epochs", "5", "--weights", "w.pt",
                              "--class-weighting", "--lr-head", "0.05"])
    assert train_config(args) == recipe_config("paper", epochs=5, weights="w.pt", class_weighting=True,
                                                 lr_head=0.05)
    args = parser.parse_args(["train", "DATA", "--out", "O", "--mode", "finetune", "--no-class-weighting"])
    assert train_config(args) == TrainConfig(mode="finetune")


def test_each_training_option_is_declared_once():
    """TrainConfig's fields are the estimator's parameters (`attention` is named `activation` there, as the
    estimator has an attention method) and, where they offer one, the command line's flags, with their help."""
    specs = {spec.name: spec for spec in fields(TrainConfig)}
    params = osteoscreen.HeadClassifier().get_params()
    assert set(params) == (set(specs) - {"patch", "attention"}) | {"activation"}
    assert all(params[name] == specs["attention" if name == "activation" else name].default for name in params)
    flags = flags_of(build_parser())
    offered = [name for name, spec in specs.items() if spec.metadata["flag"]]
    assert len(offered) >= 15 and all(flags[name] == "--" + name.replace("_", "-") for name in offered)
    assert not {"head", "clinical", "patch", "taps"} & set(offered)
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["cv"].format_help().split())
    for name in offered:
        assert " ".join(specs[name].metadata["doc"].split())[:30] in help_text
    assert "--recipe paper: alexnet" in help_text and "(default 100)" in help_text


@pytest.mark.parametrize("flag, value, message", [("--epochs", "0", r"expected a value in [1, 100000], got 0"),
                                                  ("--momentum", "1", "expected a number in [0, 1), got 1.0"),
                                                  ("--lr-head", "x", "expected a number, got 'x'"),
                                                  ("--views", "nan", "expected an integer, got 'nan'")])
def test_a_flag_is_checked_by_its_fields_own_rule(flag, value, message, capsys):
    assert main(["cv", "DATA", "--out", "O", flag, value]) == 2
    assert message in capsys.readouterr().err


def test_train_with_the_paper_recipe_records_it(small_png_cohort, tmp_path):
    model = tmp_path / "model"
    assert main(["train", str(small_png_cohort), "--out", str(model), "--recipe", "paper", "--weights", "none",
                 "--epochs", "1", "--batch-size", "4", "--native-res"]) == 0  # (100 px: 5x less work than 224)
    info = json.loads((model / "model.json").read_text())
    assert info["recipe"] == {"recipe": "paper", "changed": {"weights": "none", "epochs": 1, "batch_size": 4,
                                                          "native_res": True}}
    config = info["config"]
    assert (config["backbone"], config["mode"], config["patch_feature"], config["lr_head"]) == ("alexnet",
                                                                                                  "finetune",
                                                                                                  "pooled", 1e-2)
    assert asdict(recipe_config("paper").patch) == config["patch"]
    card = (model / "README.md").read_text()
    assert "training recipe: paper, changed: weights none, epochs 1, batch_size 4, native_res True" in card
