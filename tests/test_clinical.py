"""The clinical baseline (age and sex) against image methods: each finds the signal its inputs carry."""

import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import local_client, subject_upload
from osteoscreen.cli import main
from osteoscreen.evaluation.aggregate import summarise
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.evaluation.experiment import run_folds
from osteoscreen.models.heads import build_head
from osteoscreen.reporting.runs import RunFolder
from osteoscreen.training.config import TrainConfig
from osteoscreen.web.app import create_app

CONFIG = CVConfig(methods=("clinical", "concat"), protocol="kfold", folds=4, repeats=1,
                  train=TrainConfig(views=1, epochs=20))


def with_ages(cohort, older_if_positive: float, seed: int):
    """The cohort's subjects given ages (positives older by `older_if_positive` years on average) and sexes."""
    rng = np.random.default_rng(seed)
    cohort.patches = [replace(p, age=float(rng.normal(58 + older_if_positive * p.label, 4)),
                              sex="F" if rng.random() < 0.8 else "M") for p in cohort.patches]
    return cohort


def aurocs(cohort, tmp_path):
    records = run_folds(cohort, CONFIG, RunFolder(tmp_path))[0]
    per_subject = summarise(records, cohort.labels)[0]
    return {method: roc_auc_score(cohort.labels, result["p"]) for method, result in per_subject.items()}


@pytest.fixture(scope="module")
def null_cohort_with_age_signal(planted_cohort):
    """40 planted subjects whose images carry nothing of the label and whose positives are 12 years older; one
    cohort for the tests below, so its frozen features are extracted once."""
    return with_ages(planted_cohort(40, seed=8, group="none"), 12.0, 1)


def test_age_signal_only_the_clinical_method_finds_it(null_cohort_with_age_signal, tmp_path):
    scores = aurocs(null_cohort_with_age_signal, tmp_path)
    assert scores["clinical"] >= 0.9 and scores["concat"] <= 0.7, scores


def test_image_signal_only_the_image_method_finds_it(planted_cohort, tmp_path):
    scores = aurocs(with_ages(planted_cohort(40, seed=9), 0.0, 2), tmp_path)
    assert scores["concat"] >= 0.9 and scores["clinical"] <= 0.7, scores


def test_clinical_needs_age_and_sex(small_png_cohort, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_png_cohort, data)
    lines = (data / "subjects.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if name not in ("age", "sex")]
    (data / "subjects.csv").write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n")
    assert main(["cv", str(data), "--out", str(tmp_path / "run"), "--methods", "clinical"]) == 2
    assert "method clinical needs the age and sex columns" in capsys.readouterr().err


def test_synth_age_signal_makes_osteoporosis_subjects_older(tmp_path):
    assert main(["synth", str(tmp_path / "d"), "--n", "6", "--positives", "3", "--age-signal", "20"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "d" / "subjects.csv", newline="")))
    ages = {label: [int(r["age"]) for r in rows if r["label"] == label] for label in ("normal", "osteoporosis")}
    assert min(ages["osteoporosis"]) >= 69 and max(ages["normal"]) <= 60  # 49-60 + 20 against 49-60


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_clinical_heads_find_an_age_signal_the_images_lack(null_cohort_with_age_signal, planted_cohort, tmp_path,
                                                           mode):
    cohort = null_cohort_with_age_signal if mode == "frozen" else with_ages(
        planted_cohort(24, seed=8, group="none"), 12.0, 1)
    train = TrainConfig(views=1, epochs=20) if mode == "frozen" else TrainConfig(  # a small random AlexNet: the
        mode="finetune", backbone="alexnet", weights="none", epochs=3, batch_size=8, native_res=True,  # pooled
        precision="fp32", patch_feature="pooled")  # feature keeps its image-only twin at chance, as it should
    folds = 2 if mode == "finetune" else 4  # a fine-tune fold costs minutes on an ordinary 2-core CPU
    # the image-only twin, the control that the images lack the signal, is fitted frozen only: both cohorts are
    # null ones (no image signal planted), and fine-tuning the twin too doubled the slowest test of the suite
    methods = ("concat+clinical", "concat") if mode == "frozen" else ("concat+clinical",)
    config = CVConfig(methods=methods, protocol="kfold", folds=folds, repeats=1, train=train)
    per_subject = summarise(run_folds(cohort, config, RunFolder(tmp_path))[0], cohort.labels)[0]
    scores = {m: roc_auc_score(cohort.labels, r["p"]) for m, r in per_subject.items()}
    assert scores["concat+clinical"] >= 0.85 and scores.get("concat", 0.5) <= 0.75, scores


def test_a_clinical_head_equals_its_head_plus_a_linear_term_in_the_covariates():
    torch.manual_seed(0)
    head = build_head("group-attention", 16, 8, clinical=True)
    features, covariates = torch.randn(5, 8, 16), torch.randn(5, 3)
    expected = head.head(features).logits + covariates @ head.covariate_fc.weight.T
    torch.testing.assert_close(head(features, covariates).logits, expected)


@pytest.fixture(scope="module")
def clinical_model(small_png_cohort, tmp_path_factory):
    model = tmp_path_factory.mktemp("clinical") / "model"
    assert main(["train", str(small_png_cohort), "--out", str(model), "--method", "concat+clinical", "--views", "1",
                 "--epochs", "5"]) == 0
    return model


def test_a_clinical_model_records_its_covariates_and_predict_asks_for_them(clinical_model, small_png_cohort,
                                                                          tmp_path, capsys):
    info = json.loads((clinical_model / "model.json").read_text())
    assert info["method"] == "concat+clinical" and info["covariates"] == ["age", "sex"]
    assert info["recipe"] == {"recipe": "osteoscreen", "changed": {"epochs": 5, "views": 1}}
    assert "training recipe: osteoscreen, changed: epochs 5, views 1" in (clinical_model / "README.md").read_text()
    assert main(["predict", str(clinical_model), str(small_png_cohort), "--out", str(tmp_path / "a"),
                 "--no-figures"]) == 0
    without = tmp_path / "without"
    shutil.copytree(small_png_cohort, without)
    text = (without / "subjects.csv").read_text().splitlines()
    rows = [text[0]] + [",".join(cell if i != 4 else "" for i, cell in enumerate(line.split(","))) for line in text[1:]]
    (without / "subjects.csv").write_text("\n".join(rows) + "\n")  # column 4 is age
    assert main(["predict", str(clinical_model), str(without), "--out", str(tmp_path / "b")]) == 2
    assert "needs age and sex for every radiograph; 4 lack them" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    data, landmarks, _ = subject_upload(small_png_cohort)
    image, points = tmp_path / "x.png", tmp_path / "x.json"
    image.write_bytes(data)
    points.write_text(json.dumps(landmarks))
    single = ["predict", str(clinical_model), str(image), "--landmarks", str(points), "--no-figures"]
    assert main([*single, "--out", str(tmp_path / "c")]) == 2
    assert main([*single, "--out", str(tmp_path / "d"), "--age", "61", "--sex", "female"]) == 0


def test_the_web_page_asks_a_clinical_model_for_age_and_sex(clinical_model, small_png_cohort):
    client = local_client(create_app(model_dir=clinical_model))
    assert client.get("/api/info").json()["model"]["covariates"] == ["age", "sex"]
    data, landmarks, _ = subject_upload(small_png_cohort)
    files = {"file": ("r.png", data, "application/octet-stream")}
    refused = client.post("/api/screen", files=files, data={"landmarks": json.dumps(landmarks)})
    assert refused.status_code == 422 and "needs the patient's age and sex" in refused.json()["error"]
    bad = client.post("/api/screen", files=files, data={"landmarks": json.dumps(landmarks), "age": "old", "sex": "F"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("age:")
    screened = client.post("/api/screen", files=files, data={"landmarks": json.dumps(landmarks), "age": "58",
                                                            "sex": "F"})
    assert screened.status_code == 200 and 0 <= screened.json()["p_osteoporosis"] <= 1


def test_a_clinical_model_card_carries_its_own_cross_validated_metrics(small_png_cohort, tmp_path):
    run = tmp_path / "run"
    assert main(["cv", str(small_png_cohort), "--out", str(run), "--methods", "concat+clinical", "--protocol",
                 "kfold", "--folds", "2", "--repeats", "1", "--views", "1", "--epochs", "5"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())["methods"]
    assert main(["train", str(small_png_cohort), "--out", str(tmp_path / "model"), "--method", "concat+clinical",
                 "--views", "1", "--epochs", "5", "--cv", str(run)]) == 0
    recorded = json.loads((tmp_path / "model" / "model.json").read_text())["cross_validation"]["metrics"]
    assert recorded["auroc"] == pytest.approx(metrics["concat+clinical"]["auroc"])
    assert recorded["OPA"] == pytest.approx(metrics["concat+clinical"]["OPA"])
