"""The novelty reference: Mahalanobis distance with a Ledoit-Wolf covariance, threshold from leave-one-out."""

import numpy as np
from sklearn.covariance import LedoitWolf

from osteoscreen.novelty import fit_novelty, novelty_distance


def test_threshold_is_the_largest_leave_one_out_distance_and_far_points_exceed_it():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 5)) * [1, 2, 3, 4, 5]
    novelty = fit_novelty(features)
    loo = []
    for i in range(30):
        rest = LedoitWolf().fit(np.delete(features, i, axis=0))
        centred = features[i] - rest.location_
        loo.append(np.sqrt(centred @ rest.precision_ @ centred))
    assert novelty["threshold"] == max(loo) and novelty["n"] == 30
    inside = novelty_distance(features, novelty)
    assert (inside <= novelty["threshold"]).all()  # a subject is nearer a fit that includes it
    far = novelty_distance(features.mean(axis=0) + np.array([[0, 0, 0, 0, 40.0]]), novelty)
    assert far[0] > novelty["threshold"]
