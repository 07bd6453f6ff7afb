import numpy as np
import pytest

from osteoscreen.core.errors import InputError
from osteoscreen.data.patches import to_uint8
from osteoscreen.data.phantom.bone import bone_parameters, trabecular_field
from osteoscreen.features.lbp import lbp_histograms, subject_lbp
from osteoscreen.methods.baselines import BASELINES, build_baseline


def test_lbp_histogram_bins_and_normalisation():
    patch = np.random.default_rng(0).integers(0, 256, (100, 100), dtype=np.uint8)
    histogram = lbp_histograms(patch)
    assert histogram.shape == (10 + 18 + 26,)
    assert np.allclose([histogram[:10].sum(), histogram[10:28].sum(), histogram[28:].sum()], 1.0)
    assert subject_lbp(np.stack([patch] * 8)).shape == (8 * 54,)


def test_flat_patch_is_mostly_one_code():
    histogram = lbp_histograms(np.full((20, 20), 7, np.uint8))
    assert histogram[:10].max() > 0.75  # interior pixels all share the "flat" code; borders differ


@pytest.mark.parametrize("name", ["knn-lbp", "ensemble-lbp"])
def test_lbp_baselines_separate_textures(name):
    rng = np.random.default_rng(0)

    def subject(t_score):
        return subject_lbp(np.stack([to_uint8(trabecular_field((64, 64), bone_parameters(t_score), 0.1, rng))
                                      for _ in range(8)]))

    features = np.array([subject(-3.5 if i % 2 else 0.5) for i in range(40)])
    labels = np.arange(40) % 2
    model = build_baseline(name).fit(features[:30], labels[:30])
    assert (model.predict(features[30:]) == labels[30:]).mean() >= 0.8


def test_majority_predicts_the_training_prior():
    model = build_baseline("majority").fit(np.zeros((10, 3)), np.array([1] * 7 + [0] * 3))
    assert model.predict_proba(np.zeros((2, 3)))[:, 1].tolist() == [0.7, 0.7]
    assert set(BASELINES) == {"majority", "knn-lbp", "ensemble-lbp"}


def test_ill_args():
    with pytest.raises(InputError, match="unknown baseline"):
        build_baseline("svm")
    with pytest.raises(InputError, match="uint8"):
        lbp_histograms(np.zeros((10, 10)))
