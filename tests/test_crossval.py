import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from osteoscreen.cli import main
from osteoscreen.core.errors import InputError
from osteoscreen.core.kernels import kernel_record
from osteoscreen.evaluation import crossval
from osteoscreen.evaluation.aggregate import summarise, training_curves
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.evaluation.experiment import run_folds
from osteoscreen.evaluation.splits import Fold, LeakageError, check_no_leakage, make_folds
from osteoscreen.reporting import runs
from osteoscreen.reporting.report import SECTIONS
from osteoscreen.reporting.runs import RunFolder
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fit import fit, predict_proba

FAST = TrainConfig(views=1, epochs=15)
METHODS = ("majority", "knn-lbp", "group-attention")


@pytest.fixture(scope="module")
def cohort(planted_cohort):
    return planted_cohort(12, seed=2)


def test_loo_folds_cover_every_subject_once():
    folds = make_folds(np.array([0, 1] * 5), CVConfig())
    assert len(folds) == 10
    assert sorted(int(f.test[0]) for f in folds) == list(range(10))
    assert all(len(f.train) == 9 and f.test[0] not in f.train for f in folds)


def test_repeated_kfold_is_stratified_and_seeded():
    labels = np.array([1] * 14 + [0] * 6)
    config = CVConfig(protocol="kfold", folds=3, repeats=2)
    folds = make_folds(labels, config, seed=4)
    assert len(folds) == 6 and folds[0].name == "r00-f00"
    assert all(labels[f.test].sum() in (4, 5) for f in folds)
    assert [f.test.tolist() for f in folds] == [f.test.tolist() for f in make_folds(labels, config, seed=4)]


def test_leakage_guard_fires_on_a_bad_split():
    ids = ["A", "B", "C", "C"]  # the same subject twice: index 2 and 3
    with pytest.raises(LeakageError, match="subject\\(s\\) \\['C'\\] in both train and test"):
        check_no_leakage([Fold("bad", np.array([0, 1, 2]), np.array([3]))], ids)
    check_no_leakage(make_folds(np.array([0, 1, 0, 1]), CVConfig()), ["A", "B", "C", "D"])


def test_resume_after_interruption_gives_identical_results(cohort, tmp_path, monkeypatch):
    config = CVConfig(methods=METHODS, train=FAST)
    reference = run_folds(cohort, config, RunFolder(tmp_path / "reference"))

    calls = {"n": 0}
    original = crossval.FoldRunner.run

    def interrupted(self, method, folds):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return original(self, method, folds)

    monkeypatch.setattr(crossval.FoldRunner, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_folds(cohort, config, RunFolder(tmp_path / "resumed"))
    written = len(list((tmp_path / "resumed" / "folds").rglob("*.json")))  # jobs run side by side: about 19
    assert 0 < written < len(list((tmp_path / "reference" / "folds").rglob("*.json")))
    monkeypatch.setattr(crossval.FoldRunner, "run", original)
    resumed = run_folds(cohort, config, RunFolder(tmp_path / "resumed"))
    labels = cohort.labels
    assert json.dumps(summarise(reference[0], labels)[1]) == json.dumps(summarise(resumed[0], labels)[1])


def test_every_fold_refits_from_scratch(cohort, tmp_path):
    config = CVConfig(methods=("group-attention",), train=FAST)
    records = run_folds(cohort, config, RunFolder(tmp_path))[0]["group-attention"]
    assert len(records) == 12 and all(len(r["p"]) == 1 and len(r["attention"][0]) == 4 for r in records)
    _, metrics = summarise({"group-attention": records}, cohort.labels)
    assert metrics["group-attention"]["balanced_accuracy"] > 0.7  # the planted signal is learnt fold by fold


def test_cv_command_writes_every_output(small_png_cohort, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["cv", str(small_png_cohort), "--out", str(run), "--methods", ",".join(METHODS), "--views", "1",
            "--epochs", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "group-attention" in out and "OPA % [95% CI]" in out
    header = (run / "predictions.csv").read_text().splitlines()[0]
    assert header == ("subject_id,method,fold,y_true,p_osteoporosis,decision,att_condyle,att_angle,att_premolar,"
                      "att_tuberosity,seed")
    assert len((run / "predictions.csv").read_text().splitlines()) == 1 + 4 * len(METHODS)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"dataset", "config", "recipe", "kernels", "methods", "comparisons", "seeds", "spread",
                            "training_curves", "decision_curves"}
    recipe = {"recipe": "osteoscreen", "changed": {"epochs": 5, "views": 1}}  # what the flags changed
    assert metrics["recipe"] == recipe and json.loads((run / "config.json").read_text())["recipe"] == recipe
    assert "training recipe: osteoscreen, changed: epochs 5, views 1" in (run / "report.html").read_text()
    assert metrics["training_curves"] == {}  # frozen heads record none
    calibration = metrics["methods"]["group-attention"]["calibration"]
    assert set(calibration) == {"brier", "brier_prevalence", "calibration_intercept", "calibration_slope",
                                "separated", "reliability"}
    assert sum(b["n"] for b in calibration["reliability"]) == 4 and calibration["brier_prevalence"] == 0.25
    curve = metrics["decision_curves"]["knn-lbp"]
    assert curve["prevalence"] == 0.5 and len(curve["model"]) == len(curve["threshold"]) == 19
    assert metrics["seeds"] == [{"seed": 0, "methods": metrics["methods"]}]
    assert metrics["spread"]["knn-lbp"]["OA"] == {"mean": metrics["methods"]["knn-lbp"]["OA"], "sd": None,
                                                  "min": metrics["methods"]["knn-lbp"]["OA"],
                                                  "max": metrics["methods"]["knn-lbp"]["OA"], "n_seeds": 1}
    assert set(metrics["methods"]) == set(METHODS)
    entry = metrics["methods"]["knn-lbp"]
    assert {"OPA", "NOPA", "OA", "balanced_accuracy", "auroc", "tp", "fn", "tn", "fp", "n", "ci95"} <= set(entry)
    assert {c["method"] for c in metrics["comparisons"]} == {"majority", "knn-lbp"}
    assert all(0 <= c["delong"]["p_value"] <= 1 for c in metrics["comparisons"])
    config = json.loads((run / "config.json").read_text())
    assert config["identity"]["dataset_hash"] == metrics["dataset"]["hash"] and "torch" in config["versions"]
    kernels = kernel_record()  # what decides the last digits, in config.json, metrics.json and the report
    for key in ("torch_cpu_capability", "fingerprint"):
        assert config["kernels"][key] == metrics["kernels"][key] == kernels[key]
    train = config["identity"]["cv"]["train"]
    assert train["precision"] == "fp32" and train["threads"] == 1
    report = (run / "report.html").read_text()
    assert f"precision fp32, 1 intra-op thread(s) per computation, torch CPU capability " \
           f"{kernels['torch_cpu_capability']}" in report and f"kernel fingerprint {kernels['fingerprint']}" in report
    assert all(f"<h2>{title}</h2>" in report for title in SECTIONS)
    assert report.count("data:image/png;base64,") >= 4 and "http" not in report.split("<body>")[1]

    # the same command again resumes (nothing to do) and ends with the same metrics
    assert main(args) == 0
    assert json.dumps(json.loads((run / "metrics.json").read_text())) == json.dumps(metrics)  # NaN-safe equality
    # a different configuration in the same run directory is refused
    assert main(args[:-1] + ["6"]) == 2
    assert "holds results of a different configuration" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, message", [({"methods": ("svm",)}, "unknown method"),
                                             ({"protocol": "bootstrap"}, "protocol"),
                                             ({"folds": 1}, "folds")])
def test_ill_args(kwargs, message):
    with pytest.raises(InputError, match=message):
        CVConfig(**kwargs)


def test_too_many_folds_for_the_minority_class():
    with pytest.raises(InputError, match="exceeds the size of the smaller class"):
        make_folds(np.array([1, 1, 1, 0, 0]), CVConfig(protocol="kfold", folds=3))


def test_training_curves_summarise_every_fine_tuned_fold():
    records = {0: {"concat": [{"history": {"loss": [0.7, 0.5], "accuracy": [0.5, 0.75]}},
                              {"history": {"loss": [0.9, 0.3], "accuracy": [0.25, 1.0]}}],
                   "majority": [{"p": [0.5]}]},
               1: {"concat": [{"history": {"loss": [0.8, 0.4], "accuracy": [0.5, 0.5]}}]}}
    curves = training_curves(records)
    assert set(curves) == {"concat"} and curves["concat"]["folds"] == 3
    np.testing.assert_allclose(curves["concat"]["loss"]["mean"], [0.8, 0.4])
    assert curves["concat"]["loss"]["min"] == [0.7, 0.3] and curves["concat"]["accuracy"]["max"] == [0.5, 1.0]


def test_finetune_cv_reports_its_training_curves(small_png_cohort, tmp_path):
    run = tmp_path / "run"
    assert main(["cv", str(small_png_cohort), "--out", str(run), "--methods", "concat", "--mode", "finetune",
                 "--backbone", "alexnet", "--weights", "none", "--epochs", "2", "--batch-size", "2",
                 "--native-res", "--precision", "fp32", "--workers", "1"]) == 0
    curves = json.loads((run / "metrics.json").read_text())["training_curves"]
    assert curves["concat"]["folds"] == 4 and len(curves["concat"]["loss"]["mean"]) == 2
    fold = json.loads(next((run / "folds" / "seed-0" / "concat").glob("*.json")).read_text())
    assert len(fold["history"]["accuracy"]) == 2
    assert 'alt="training curves"' in (run / "report.html").read_text()


def test_decision_curves_use_the_prevalence_given(small_png_cohort, tmp_path):
    run = tmp_path / "run"
    assert main(["cv", str(small_png_cohort), "--out", str(run), "--methods", "majority,knn-lbp",
                 "--prevalence", "0.2"]) == 0
    curve = json.loads((run / "metrics.json").read_text())["decision_curves"]["knn-lbp"]
    assert curve["prevalence"] == 0.2 and curve["refer_all"][0] == pytest.approx(0.2 - 0.8 * 0.05 / 0.95)
    assert "at prevalence 0.20 (given (prevalence" in (run / "report.html").read_text()
    assert main(["cv", str(small_png_cohort), "--out", str(tmp_path / "bad"), "--prevalence", "1.5"]) == 2


def test_repeated_kfold_reports_each_repeats_auroc_and_loo_does_not():
    labels = np.array([1, 1, 0, 0])
    kfold = [{"fold": "r00-f00", "test": [0, 2], "p": [0.9, 0.2], "attention": None},
             {"fold": "r00-f01", "test": [1, 3], "p": [0.3, 0.4], "attention": None},
             {"fold": "r01-f00", "test": [0, 3], "p": [0.6, 0.7], "attention": None},
             {"fold": "r01-f01", "test": [1, 2], "p": [0.8, 0.1], "attention": None}]
    metrics = summarise({"m": kfold}, labels)[1]["m"]
    # repeat 0: scores (0.9, 0.3 | 0.2, 0.4) -> 3 of 4 pairs ordered; repeat 1: (0.6, 0.8 | 0.1, 0.7) -> 3 of 4
    assert metrics["auroc_repeats"]["per_repeat"] == [0.75, 0.75] and metrics["auroc_repeats"]["mean"] == 0.75
    loo = [{"fold": f"loo-{i:04d}", "test": [i], "p": [p], "attention": None}
           for i, p in enumerate([0.9, 0.3, 0.2, 0.4])]
    assert "auroc_repeats" not in summarise({"m": loo}, labels)[1]["m"]


def test_leave_pair_out_auroc_is_the_fraction_of_pairs_one_model_orders_right(planted_cohort, tmp_path):
    small = planted_cohort(8, seed=4)
    config = CVConfig(methods=("concat",), leave_pair_out=True, train=replace(FAST, epochs=8))
    result = crossval.FoldRunner(small, config, 0).leave_pair_out("concat")
    labels, wins = small.labels, []
    for i in np.flatnonzero(labels == 1):
        for j in np.flatnonzero(labels == 0):  # the definition, one plain fit per pair
            model = fit(small, np.setdiff1d(np.arange(8), [i, j]), replace(config.train, head="concat"))
            p = predict_proba(model, small, [i, j])[0]
            wins.append(float(p[0] > p[1]) + 0.5 * float(p[0] == p[1]))
    assert result["pairs"] == 16 and result["auroc"] == pytest.approx(np.mean(wins))
    with pytest.raises(InputError, match="^leave_pair_out: is for protocol=.loo."):
        CVConfig(protocol="kfold", leave_pair_out=True)


def test_cv_leave_pair_out_is_reported_and_kept_for_resume(small_png_cohort, tmp_path):
    run = tmp_path / "run"
    args = ["cv", str(small_png_cohort), "--out", str(run), "--methods", "majority,concat", "--views", "1",
            "--epochs", "3", "--leave-pair-out"]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())["methods"]
    assert metrics["concat"]["auroc_lpo"]["pairs"] == 4 and metrics["majority"]["auroc_lpo"]["auroc"] == 0.5
    assert (run / "lpo" / "seed-0" / "concat.json").exists()
    assert "leave-pair-out (4 pairs)" in (run / "report.html").read_text()
    assert main(args[:-1] + ["--protocol", "kfold", "--folds", "2", "--leave-pair-out"]) == 2


def test_a_run_made_before_later_options_resumes_when_they_keep_their_neutral_value(tmp_path):
    info = {"hash": "h"}
    stored = runs.prepare_run(tmp_path, CVConfig(), info)
    identity = stored["identity"]
    for option in ("rule", "leave_pair_out", "prevalence"):
        del identity["cv"][option]  # as a run written before these options existed
    del identity["cv"]["train"]["patch_feature"]  # frozen mode: the fine-tune patch feature never mattered
    del identity["cv"]["train"]["clinical"]
    del identity["cv"]["train"]["threads"]  # before TrainConfig.threads
    (tmp_path / "config.json").write_text(json.dumps({**stored, "identity": identity}))
    runs.prepare_run(tmp_path, CVConfig(), info)  # resumes
    with pytest.raises(InputError, match="different configuration"):
        runs.prepare_run(tmp_path, CVConfig(leave_pair_out=True), info)


@pytest.fixture(scope="module")
def osteopenia_cohort(tmp_path_factory):
    """8 phantom subjects: 3 osteoporosis, 2 osteopenia, 3 normal."""
    from osteoscreen.data.phantom.synthesis import PhantomConfig, synthesise

    return synthesise(tmp_path_factory.mktemp("osteopenia") / "data",
                      PhantomConfig(n=8, positives=3, osteopenia=2, seed=4))


@pytest.mark.parametrize("task, n, positives, excluded", [("osteoporosis-vs-normal", 6, 3, {"osteopenia": 2}),
                                                          ("osteoporosis-vs-rest", 8, 3, {}),
                                                          ("low-bmd-vs-normal", 8, 5, {})])
def test_cv_tasks_count_and_report_their_flow(osteopenia_cohort, tmp_path, task, n, positives, excluded):
    run = tmp_path / "run"
    assert main(["cv", str(osteopenia_cohort), "--out", str(run), "--methods", "majority", "--task", task]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    dataset = metrics["dataset"]
    assert (dataset["n"], dataset["positives"], dataset["listed"], dataset["excluded"]) == (n, positives, 8, excluded)
    assert metrics["config"]["task"] == task and metrics["methods"]["majority"]["n"] == n
    report = (run / "report.html").read_text()
    assert f"task {task}" in report and (f"excluded by the task {task}: 2 osteopenia" in report) == bool(excluded)


def test_train_records_its_task_and_predict_scores_osteopenia_subjects(osteopenia_cohort, tmp_path):
    model = tmp_path / "model"
    assert main(["train", str(osteopenia_cohort), "--out", str(model), "--views", "1", "--epochs", "3",
                 "--task", "low-bmd-vs-normal"]) == 0
    data = json.loads((model / "model.json").read_text())["training_data"]
    assert (data["task"], data["n"], data["positives"]) == ("low-bmd-vs-normal", 8, 5)
    assert "task `low-bmd-vs-normal`" in (model / "README.md").read_text()
    assert main(["predict", str(model), str(osteopenia_cohort), "--out", str(tmp_path / "o"), "--no-figures"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "o" / "predictions.csv", newline="")))
    assert len(rows) == 8 and sorted({r["who_class"] for r in rows}) == ["normal", "osteopenia", "osteoporosis"]
    assert {r["who_class"]: r["y_true"] for r in rows} == {"normal": "normal", "osteopenia": "osteoporosis",
                                                           "osteoporosis": "osteoporosis"}  # the task's classes
