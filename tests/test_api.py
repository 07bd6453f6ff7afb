"""The public Python API: the README's examples run as written, and the estimators behave as scikit-learn's."""

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_predict

import osteoscreen
from osteoscreen.core.errors import InputError

README = Path(__file__).resolve().parents[1] / "README.md"


def api_examples() -> str:
    """The Python blocks of the README's "Python API" section, in order."""
    text = README.read_text()
    section = text[text.index("## Python API"):]
    section = section[:section.index("\n## ", 1)]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_readme_python_api_examples_run(tmp_path, monkeypatch, capsys):
    code = api_examples()
    assert code.count("osteoscreen.") >= 10
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert (tmp_path / "runs/api/model/model.json").is_file()
    assert "(4, 2) (4, 4)" in printed and "group-attention" in printed
    assert namespace["p"].shape == (16,) and np.all((namespace["p"] >= 0) & (namespace["p"] <= 1))
    assert len(namespace["finetuned"].history_["loss"]) == 2
    assert namespace["result"].decision in ("normal", "osteoporosis")
    screened = {s.subject_id: s.probability for s in namespace["model"].predict(namespace["cohort"])}
    assert screened[namespace["first"]] == pytest.approx(namespace["result"].probability, abs=1e-6)


def test_everything_in_all_imports():
    for name in osteoscreen.__all__:
        assert getattr(osteoscreen, name) is not None, name
    with pytest.raises(AttributeError):
        osteoscreen.not_a_name  # noqa: B018


@pytest.fixture(scope="module")
def cohort(planted_cohort):
    return planted_cohort(12, seed=4)


def test_views_index_like_arrays_and_share_features(cohort):
    view = cohort[np.array([5, 1, 7])]
    assert view.subject_ids == [cohort.subject_ids[i] for i in (5, 1, 7)]
    assert list(view[1:].positions) == [1, 7] and view.memo is cohort.memo
    assert len(cohort[cohort.labels == 1]) == int(cohort.labels.sum())
    np.testing.assert_array_equal(view.render([0, 2], 32).numpy(), cohort.render([5, 7], 32).numpy())


def test_head_estimator_equals_the_internal_fit_and_clones(cohort):
    from osteoscreen.training.config import TrainConfig
    from osteoscreen.training.fit import fit, predict_proba

    estimator = osteoscreen.HeadClassifier("abmil", epochs=10, views=2)
    train, test = np.arange(8), np.arange(8, 12)
    fitted = clone(estimator).fit(cohort[train])
    model = fit(cohort, train, TrainConfig(head="abmil", epochs=10, views=2, patch=cohort.patch_config))
    expected, attention = predict_proba(model, cohort, test)
    np.testing.assert_allclose(fitted.predict_proba(cohort[test])[:, 1], expected)
    np.testing.assert_allclose(fitted.attention(cohort[test]), attention)
    assert clone(estimator).get_params() == estimator.get_params()
    assert osteoscreen.HeadClassifier("concat", epochs=2, views=1).fit(cohort[train]).attention(cohort[test]) is None


def test_estimators_use_the_y_they_are_given(cohort):
    flipped = 1 - cohort.labels
    baseline = osteoscreen.Baseline("majority").fit(cohort, flipped)
    assert baseline.predict_proba(cohort)[0, 1] == pytest.approx(flipped.mean())
    assert osteoscreen.Baseline("majority").fit(cohort).predict_proba(cohort)[0, 1] == pytest.approx(
        cohort.labels.mean())


def test_cross_val_predict_matches_a_hand_written_loop(cohort):
    from sklearn.model_selection import StratifiedKFold

    estimator = osteoscreen.Baseline("knn-lbp")
    splits = list(StratifiedKFold(3).split(np.zeros(len(cohort)), cohort.labels))
    predicted = cross_val_predict(estimator, cohort, cohort.labels, cv=splits, method="predict_proba")
    by_hand = np.zeros(len(cohort))
    for train, test in splits:
        by_hand[test] = clone(estimator).fit(cohort[train]).predict_proba(cohort[test])[:, 1]
    np.testing.assert_allclose(predicted[:, 1], by_hand)


def test_bad_use_raises_scikit_learns_errors(cohort):
    with pytest.raises(NotFittedError, match="not fitted"):  # scikit-learn's, as its estimators raise
        osteoscreen.Baseline().predict(cohort)
    with pytest.raises(InputError, match="Cohort"):
        osteoscreen.Baseline().fit(np.zeros((3, 2)), [0, 1, 0])
    with pytest.raises(InputError, match="head: expected one of"):
        osteoscreen.HeadClassifier("no-such-head").fit(cohort)
    with pytest.raises(TypeError, match="unexpected parameter.* attention; its parameters are head, mode"):
        osteoscreen.HeadClassifier(attention="softmax")


def test_cross_validate_in_memory_resumes_from_its_store(cohort, monkeypatch):
    from osteoscreen.evaluation import crossval
    from osteoscreen.evaluation.experiment import MemoryStore

    config = osteoscreen.CVConfig(methods=("majority", "knn-lbp", "concat"), protocol="kfold", folds=3, repeats=1,
                                  train=osteoscreen.TrainConfig(epochs=5, views=1))
    store = MemoryStore()
    first = osteoscreen.cross_validate(cohort, config, store=store)
    assert isinstance(first, osteoscreen.CVResult) and len(store.folds) == 3 * 3
    assert first.probabilities("concat").shape == (len(cohort),) and set(first.metrics) == set(config.methods)
    assert [r["fold"] for r in first.records[0]["knn-lbp"]] == ["r00-f00", "r00-f01", "r00-f02"]
    monkeypatch.setattr(crossval.FoldRunner, "run", lambda *a: pytest.fail("a finished fold ran again"))
    again = osteoscreen.cross_validate(cohort, config, store=store)
    assert again.table() == first.table() and again.metrics == first.metrics


def test_fine_tuned_heads_compose_with_cross_val_predict(planted_cohort):
    small = planted_cohort(8, seed=7)
    estimator = osteoscreen.HeadClassifier("group-attention", mode="finetune", backbone="alexnet", weights="none",
                                           epochs=1, batch_size=4, native_res=True)
    p = cross_val_predict(estimator, small, small.labels, cv=2, method="predict_proba")
    assert p.shape == (8, 2) and np.allclose(p.sum(axis=1), 1)


def test_a_model_fitted_on_a_view_records_that_view(tmp_path):
    from osteoscreen.data.patches import PatchConfig

    path = osteoscreen.synth(tmp_path / "data", n=10, positives=5, seed=2)
    cohort = osteoscreen.load_dataset(path, patch=PatchConfig(patch_px=64))
    view = cohort[np.array([0, 1, 2, 3, 4, 5, 6])]
    model = osteoscreen.Model.fit(view, "concat", osteoscreen.TrainConfig(epochs=3, views=1))
    data = model.info["training_data"]
    assert (data["n"], data["positives"], data["negatives"]) == (7, int(view.labels.sum()), 7 - view.labels.sum())
    assert data["hash"] == cohort.info["hash"] and model.config.patch.patch_px == 64  # the cohort's patches
    assert osteoscreen.Model.load(model.save(tmp_path / "model")).info["training_data"]["n"] == 7
