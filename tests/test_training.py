import re

import numpy as np
import pytest
import torch

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import GROUPS
from osteoscreen.features.frozen import frozen_features
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fit import fit, predict_proba

PLANTED_GROUP = "premolar"  # the group whose patches carry the label in the planted_cohort fixture

@pytest.fixture(scope="module")
def cohort(planted_cohort):
    return planted_cohort(40, seed=0)


def test_group_attention_finds_the_planted_group(cohort):
    config = TrainConfig(head="group-attention", views=1, epochs=60)
    train, test = np.arange(24), np.arange(24, 40)
    model = fit(cohort, train, config)
    probability, attention = predict_proba(model, cohort, test)
    accuracy = np.mean((probability >= 0.5) == cohort.labels[test])
    assert accuracy >= 0.8, accuracy
    assert GROUPS[int(np.argmax(attention.mean(axis=0)))] == PLANTED_GROUP, attention.mean(axis=0)


@pytest.mark.parametrize("head", ["concat", "abmil", "gated-abmil"])
def test_every_frozen_head_learns_and_is_reproducible(cohort, head):
    config = TrainConfig(head=head, views=1, epochs=30)
    train, test = np.arange(24), np.arange(24, 40)
    first = predict_proba(fit(cohort, train, config), cohort, test)[0]
    again = predict_proba(fit(cohort, train, config), cohort, test)[0]
    np.testing.assert_array_equal(first, again)
    assert np.mean((first >= 0.5) == cohort.labels[test]) >= 0.75


def test_finetune_runs_the_same_surface(planted_cohort):
    small = planted_cohort(6, seed=1)
    config = TrainConfig(mode="finetune", backbone="alexnet", weights="none", epochs=1, batch_size=4)
    probability, attention = predict_proba(fit(small, np.arange(4), config), small, [4, 5])
    assert probability.shape == (2,) and ((probability >= 0) & (probability <= 1)).all()
    assert attention.shape == (2, 4)


@pytest.mark.parametrize("flags, expected", [
    (["--mode", "finetune", "--backbone", "alexnet", "--weights", "none", "--lr-backbone", "10", "--epochs", "3",
      "--native-res", "--batch-size", "4"],
     r"the training loss was (nan|inf) in epoch [23] of 3 \(lr_backbone 10, lr_head 0.01, weights none\); lower the "
     r"learning rates or start from pretrained backbone weights"),
    (["--views", "1", "--epochs", "20", "--lr-head", "1e6"],
     r"the head's weights were not finite after 20 epochs \(lr_head 1e\+06\); lower the learning rate"),
], ids=["finetune", "frozen"])
def test_a_diverging_training_stops_with_one_line_and_writes_nothing(small_png_cohort, tmp_path, capsys, flags,
                                                                     expected):
    """Learning rates far too high: the loss or the head's weights overflow to nan. Training stops with the reason
    instead of saving a model that answers nan for every radiograph (`train` saved one in frozen mode)."""
    from osteoscreen.cli import main

    out = tmp_path / "model"
    assert main(["train", str(small_png_cohort), "--out", str(out), "--precision", "fp32", *flags]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(f"osteoscreen: error: training diverged: {expected}", error), error
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_frozen_features_are_computed_once(cohort):
    config = TrainConfig(views=1)
    assert frozen_features(cohort, config) is frozen_features(cohort, config)


@pytest.mark.parametrize("kwargs, message", [
    ({"head": "svm"}, "head: expected one of concat, group-attention"), ({"mode": "warm"}, "mode: expected one of"),
    ({"epochs": 0}, r"epochs: expected a value in \[1, 100000\], got 0"), ({"backbone": "vgg"}, "backbone: expected")])
def test_ill_args(kwargs, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**kwargs)


def test_fit_needs_both_classes(cohort):
    with pytest.raises(InputError, match="one subject of each class"):
        fit(cohort, [0, 2, 4], TrainConfig(views=1))


def test_fold_standardisation_uses_each_folds_own_training_moments():
    import torch

    from osteoscreen.training.stacked import _standardised_folds

    features = torch.randn(12, 3, 8, 5, generator=torch.Generator().manual_seed(0)) * 4 + 10  # [N, V, 8, T]
    index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11]])  # 2 folds of 8 subjects
    x, mean, std = _standardised_folds(features, index)
    for fold in range(2):
        own = features[index[fold]]  # [8, V, 8, T]
        expected_mean, expected_std = own.mean(dim=(0, 1, 2)), own.std(dim=(0, 1, 2))
        torch.testing.assert_close(mean[fold], expected_mean)
        torch.testing.assert_close(std[fold], expected_std)
        torch.testing.assert_close(x[fold], (own - expected_mean) / expected_std)
    assert not torch.allclose(mean[0], mean[1])


@pytest.fixture(scope="module")
def aged_cohort(planted_cohort):
    """14 planted subjects with ages and sexes; one cohort for every head below, so its features are extracted
    once."""
    from dataclasses import replace

    small = planted_cohort(14, seed=5)
    small.patches = [replace(p, age=50.0 + i, sex="FM"[i % 2]) for i, p in enumerate(small.patches)]
    return small


@pytest.mark.parametrize("head, clinical, weighting", [("group-attention", False, False), ("abmil", False, True),
                                                       ("concat", True, False)])
def test_stacked_fast_path_equals_the_plain_loop(aged_cohort, head, clinical, weighting):
    from osteoscreen.training.head_loop import fit_head
    from osteoscreen.training.stacked import fit_frozen_folds

    small = aged_cohort
    config = TrainConfig(head=head, views=3, epochs=12, batch_size=5, precision="fp32", clinical=clinical,
                         class_weighting=weighting)
    train_sets = [np.arange(10), np.arange(4, 14), np.array([0, 3, 5, 6, 8, 9, 11, 12, 13, 1])]
    stacked = fit_frozen_folds(small, train_sets, config)
    for train, model in zip(train_sets, stacked, strict=True):
        plain = fit_head(small, train, config)
        torch.testing.assert_close(model.feature_mean, plain.feature_mean, atol=1e-5, rtol=1e-5)
        for name, value in plain.head.state_dict().items():
            torch.testing.assert_close(model.head.state_dict()[name], value, atol=1e-4, rtol=1e-4, msg=name)
        np.testing.assert_allclose(predict_proba(model, small, np.arange(14))[0],
                                   predict_proba(plain, small, np.arange(14))[0], atol=1e-3)


def test_feature_cache_tells_weights_files_apart(planted_cohort, tmp_path):
    """Two weights files under the same name (the same provenance string) give their own features."""
    from osteoscreen.models.backbones import Backbone

    small = planted_cohort(3, seed=6)
    small.cache_dir, small.data_hash = tmp_path, "same-data"
    config = TrainConfig(views=1, weights="none")
    first, second = Backbone("efficientnet_lite0", "none"), Backbone("efficientnet_lite0", "none")
    with torch.no_grad():
        for parameter in second.net.parameters():
            parameter.mul_(0.5)
    assert first.weights_source == second.weights_source
    a = frozen_features(small, config, backbone=first)
    b = frozen_features(small, config, backbone=second)
    assert not torch.allclose(a, b) and len(list(tmp_path.glob("features-*.safetensors"))) == 2
