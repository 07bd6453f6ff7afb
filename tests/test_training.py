import numpy as np
import pytest

from osteoscreen.errors import InputError
from osteoscreen.landmarks import GROUPS
from osteoscreen.training import TrainConfig, fit, predict_proba

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


def test_frozen_features_are_computed_once(cohort):
    config = TrainConfig(views=1)
    assert cohort.frozen_features(config) is cohort.frozen_features(config)


@pytest.mark.parametrize("kwargs, message", [({"head": "svm"}, "unknown head"), ({"mode": "warm"}, "mode must be"),
                                             ({"epochs": 0}, "epochs"), ({"backbone": "vgg"}, "unknown backbone")])
def test_ill_args(kwargs, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**kwargs)


def test_fit_needs_both_classes(cohort):
    with pytest.raises(InputError, match="one subject of each class"):
        fit(cohort, [0, 2, 4], TrainConfig(views=1))


def test_fold_standardisation_uses_each_folds_own_training_moments():
    import torch

    from osteoscreen.training import _standardised_folds

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
