"""The novelty reference: Mahalanobis distance with a Ledoit-Wolf covariance, threshold from leave-one-out."""

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from osteoscreen.deploy.novelty import fit_novelty, novelty_distance


def test_threshold_is_the_largest_leave_one_out_distance_and_far_points_exceed_it():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 5)) * [1, 2, 3, 4, 5]
    novelty = fit_novelty(features)
    loo = []
    for i in range(30):
        rest = LedoitWolf().fit(np.delete(features, i, axis=0))
        centred = features[i] - rest.location_
        loo.append(np.sqrt(centred @ rest.precision_ @ centred))
    assert novelty["threshold"] == pytest.approx(max(loo), rel=1e-9) and novelty["n"] == 30
    inside = novelty_distance(features, novelty)
    assert (inside <= novelty["threshold"]).all()  # a subject is nearer a fit that includes it
    far = novelty_distance(features.mean(axis=0) + np.array([[0, 0, 0, 0, 40.0]]), novelty)
    assert far[0] > novelty["threshold"]


@pytest.mark.parametrize("n, dims", [(12, 300), (30, 5), (40, 1200)])
def test_the_gram_space_ledoit_wolf_is_scikit_learns(n, dims):
    """Computed from the n x n Gram matrix (D = 4096 for AlexNet's fc7: scikit-learn's D x D inverse took 14 s a
    fit, and leave-one-out makes n + 1 fits), the mean, precision and distances are scikit-learn's LedoitWolf's."""
    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, dims)) * rng.uniform(0.5, 3, size=dims) + 2.0
    novelty = fit_novelty(features)
    reference = LedoitWolf().fit(features)
    np.testing.assert_allclose(novelty["mean"], reference.location_, rtol=1e-12)
    scale = np.abs(reference.precision_).max()
    np.testing.assert_allclose(novelty["precision"], reference.precision_, rtol=1e-7, atol=1e-9 * scale)
    rest = LedoitWolf().fit(features[1:])
    centred = features[0] - rest.location_
    first = np.sqrt(centred @ rest.precision_ @ centred)
    assert first <= novelty["threshold"] * (1 + 1e-9)


def test_identical_features_fall_back_to_scikit_learn():
    features = np.ones((5, 3))
    novelty = fit_novelty(features)
    assert novelty["threshold"] == 0 and np.isfinite(novelty["precision"]).all()
