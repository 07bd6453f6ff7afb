import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from osteoscreen.core.errors import InputError
from osteoscreen.evaluation.metrics import (
    confusion_counts,
    delong_test,
    mcnemar_exact,
    repeat_auroc,
    screening_metrics,
    wilson_interval,
)


def labels_and_scores(tp, fn, tn, fp):
    y_true = np.array([1] * (tp + fn) + [0] * (tn + fp))
    y_pred = np.array([1] * tp + [0] * fn + [0] * tn + [1] * fp)
    return y_true, np.where(y_pred == 1, 0.9, 0.1)


def test_the_papers_counts():
    metrics = screening_metrics(*labels_and_scores(15, 6, 46, 3))
    assert round(metrics["OPA"], 3) == 0.714
    assert round(metrics["NOPA"], 3) == 0.939
    assert round(metrics["OA"], 3) == 0.871
    assert metrics["balanced_accuracy"] == pytest.approx((15 / 21 + 46 / 49) / 2)
    assert (metrics["tp"], metrics["fn"], metrics["tn"], metrics["fp"], metrics["n"]) == (15, 6, 46, 3, 70)


def test_wilson_interval_matches_published_values():
    # Brown, Cai & DasGupta (2001), and Newcombe (1998) Table I: 81/263 -> 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson_interval(15, 148)  # Newcombe (1998): 0.0624 to 0.1605
    assert (round(low, 4), round(high, 4)) == (0.0624, 0.1605)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_auroc_and_hand_computed_small_case():
    y_true = np.array([1, 1, 0, 0])
    metrics = screening_metrics(y_true, np.array([0.8, 0.4, 0.6, 0.2]))
    assert metrics["auroc"] == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ranked right
    assert (metrics["tp"], metrics["fn"], metrics["tn"], metrics["fp"]) == (1, 1, 1, 1)
    assert metrics["auroc_pooled"] is True


def test_mcnemar_exact():
    reference = np.array([True] * 10 + [False] * 2 + [True] * 5)
    other = np.array([False] * 10 + [True] * 2 + [True] * 5)
    result = mcnemar_exact(reference, other)
    assert (result["b"], result["c"]) == (10, 2)
    assert result["p_value"] == pytest.approx(0.0386, abs=1e-4)  # 2 * P(X <= 2), X ~ Bin(12, 1/2)
    assert mcnemar_exact(reference, reference)["p_value"] == 1.0


def test_ill_args():
    with pytest.raises(InputError):
        confusion_counts(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(InputError):
        confusion_counts(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(InputError):
        mcnemar_exact(np.array([True]), np.array([True, False]))


def test_repeat_auroc_matches_scikit_learn_per_repeat_and_brackets_its_mean():
    rng = np.random.default_rng(1)
    y = np.array([1] * 30 + [0] * 15)
    scores = np.round(y + rng.normal(0, 1.0, (4, len(y))), 1)  # rounding makes ties
    result = repeat_auroc(y, scores, boots=500)
    expected = [roc_auc_score(y, row) for row in scores]
    np.testing.assert_allclose(result["per_repeat"], expected, atol=1e-6)
    assert result["mean"] == pytest.approx(np.mean(expected))
    low, high = result["ci95"]
    assert low < result["mean"] < high and high - low < 0.4
    assert repeat_auroc(y, scores, boots=500) == result  # seeded


def test_delong_matches_its_definition_by_brute_force():
    rng = np.random.default_rng(3)
    y = np.array([1] * 12 + [0] * 9)
    a = np.round(y * 0.8 + rng.normal(0, 1, len(y)), 1)  # rounded: ties
    b = np.round(y * 0.3 + 0.5 * a + rng.normal(0, 1, len(y)), 1)  # correlated with a
    result = delong_test(y, a, b)

    def psi(u, v):
        return (u > v) + 0.5 * (u == v)

    components = []
    for s in (a, b):  # DeLong 1988's structural components, pair by pair
        x, z = s[y == 1], s[y == 0]
        components.append((np.array([psi(xi, z).mean() for xi in x]), np.array([psi(x, zj).mean() for zj in z])))
    auc = [c[0].mean() for c in components]
    s10 = np.cov(np.stack([components[0][0], components[1][0]]))
    s01 = np.cov(np.stack([components[0][1], components[1][1]]))
    cov = s10 / 12 + s01 / 9
    z = (auc[0] - auc[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result["auroc_a"] == pytest.approx(roc_auc_score(y, a)) and result["auroc_b"] == pytest.approx(auc[1])
    assert result["z"] == pytest.approx(z)
    assert result["p_value"] == pytest.approx(2 * norm.sf(abs(z)))
    assert delong_test(y, a, a)["p_value"] == 1.0
