"""train -> save -> load -> predict, safe model files, single images, DICOM vs PNG, landmark import."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import noise_copy
from osteoscreen.cli import main
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.data.annotations import import_landmarks
from osteoscreen.data.cohort import Cohort
from osteoscreen.data.dataset import load_dataset
from osteoscreen.deploy.model import Model
from osteoscreen.deploy.prediction_writers import PredictionTable, Screened, Writer
from osteoscreen.deploy.screening import predict
from osteoscreen.io.outputs import subject_file_names
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fit import fit, predict_proba

FROZEN = TrainConfig(views=1, epochs=5)
FINETUNE = TrainConfig(mode="finetune", backbone="alexnet", weights="none", epochs=1, batch_size=4, native_res=True)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def dataset(small_png_cohort):
    return load_dataset(small_png_cohort)


@pytest.fixture(scope="module")
def frozen_model(dataset, small_png_cohort, tmp_path_factory):
    cohort = Cohort.from_dataset(dataset, FROZEN.patch)
    model = fit(cohort, np.arange(len(cohort)), FROZEN)
    directory = Model(model, training_data=dataset.summary()).save(tmp_path_factory.mktemp("model") / "frozen")
    return model, cohort, directory


@pytest.mark.parametrize("config", [FROZEN, FINETUNE], ids=["frozen", "finetune"])
def test_saved_and_loaded_model_predicts_exactly_as_in_memory(dataset, small_png_cohort, tmp_path, config):
    cohort = Cohort.from_dataset(dataset, config.patch)
    model = fit(cohort, np.arange(len(cohort)), config)
    in_memory = predict_proba(model, cohort, np.arange(len(cohort)))
    directory = Model(model, training_data=dataset.summary()).save(tmp_path / "model")
    loaded = Model.load(directory)
    fresh = Cohort.from_dataset(dataset, config.patch)
    reloaded = predict_proba(loaded.fitted, fresh, np.arange(len(fresh)))
    np.testing.assert_array_equal(reloaded[0], in_memory[0])
    np.testing.assert_array_equal(reloaded[1], in_memory[1])
    rows = read_rows(predict(loaded, dataset, tmp_path / "screen", figures=False))
    # predict streams one subject at a time: on the CPU that agrees with a batch to ~1e-9, so the CSV's 6 decimals
    # differ by at most one unit (a value at a rounding boundary: seen, 5.004e-7); CUDA picks kernels by batch size
    # (measured on an H100: up to 8e-6 apart)
    batch_tolerance = 1e-6 if model.config.device == "cpu" else 1e-4
    np.testing.assert_allclose([float(r["p_osteoporosis"]) for r in rows], in_memory[0], rtol=0, atol=batch_tolerance)
    assert not (tmp_path / "screen" / "figures").exists()  # figures=False writes no figures folder
    info = json.loads((directory / "model.json").read_text())
    assert info["training_data"]["synthetic"] and info["threshold"] == 0.5
    assert "no clinical validity" in (directory / "README.md").read_text()


def test_a_loaded_frozen_model_extracts_features_with_its_own_backbone(frozen_model, dataset):
    _, _, directory = frozen_model
    loaded = Model.load(directory)
    plain = predict_proba(loaded.fitted, Cohort.from_dataset(dataset, FROZEN.patch), np.arange(4))[0]
    with torch.no_grad():
        for parameter in loaded.fitted.backbone.parameters():
            parameter.mul_(0.5)  # the file's backbone, changed: predictions must follow it
    changed = predict_proba(loaded.fitted, Cohort.from_dataset(dataset, FROZEN.patch), np.arange(4))[0]
    assert np.abs(plain - changed).max() > 1e-3


def rebind(directory: Path, info: dict) -> None:
    """Rewrite a model's model.json as `info` with a consistent binding (what a model written that way has)."""
    from safetensors.torch import load_file, save_file

    from osteoscreen.io.bound_files import BINDING_KEY, canonical_digest

    weights = directory / "weights.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"format": "3", BINDING_KEY: canonical_digest(info)})
    info = {**info, "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    (directory / "model.json").write_text(json.dumps(info))


@pytest.mark.parametrize("field, value, message", [
    ("threshold", 0, r"\$\.threshold: expected a number in \(0, 1\), got 0"),
    ("threshold", 2, r"\$\.threshold: expected a number in \(0, 1\), got 2"),
    ("threshold", "NaN", r"NaN is not a finite number"),
    ("threshold", "0.5", r"\$\.threshold: expected a number, got \"0.5\""),
    ("threshold", None, r"\$\.threshold: expected a number, got null"),
    ("threshold", 0.3, r"edited after the model was written"),
    ("method", "concat", r"method and mode differ"),
    ("classes", ["normal", "osteopenia"], r"\$\.classes: expected"),
    ("config.epochs", "100", r"\$\.config\.epochs: expected an integer"),
    ("config.epochs", 0, r"\$\.config: epochs: expected a value in \[1, 100000\], got 0"),
    ("config.lr_head", "1e400", r"number 1e400 overflows"),
    ("config.patch.context", None, r"\$\.config\.patch\.context: expected a number, got null"),
    ("config.extra", 1, r"\$\.config: unknown member\(s\) extra"),
    ("training_data.n", -1, r"\$\.training_data\.n: expected an integer >= 0"),
    ("weights_sha256", "abc", r"\$\.weights_sha256: expected 64 lower-case hex digits"),
    ("backbone.taps", [1, "x"], r"\$\.backbone\.taps\[1\]: expected an integer"),
    ("decision_rule.calibration.method", "isotonic", r"\$\.decision_rule\.calibration\.method: expected one of"),
    ("decision_rule.rule", None, r"\$\.decision_rule\.rule: expected a string"),
])
def test_every_model_json_field_is_checked_and_any_edit_is_refused(frozen_model, tmp_path, field, value, message):
    _, _, directory = frozen_model
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    info = json.loads((directory / "model.json").read_text())
    *parents, last = field.split(".")
    node = info
    for key in parents:
        node = node[key]
    node[last] = value
    text = json.dumps(info).replace('"NaN"', "NaN").replace('"1e400"', "1e400")  # as a hand edit writes them
    (broken / "model.json").write_text(text)
    with pytest.raises(InputError, match=message):
        Model.load(broken)
    assert main(["predict", str(broken), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_tampered_or_corrupt_model_files_are_refused(frozen_model, tmp_path):
    _, _, directory = frozen_model
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    weights = broken / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256"):
        Model.load(broken)
    info = json.loads((directory / "model.json").read_text())
    weights.write_bytes(b"not a safetensors file")
    (broken / "model.json").write_text(json.dumps({**info, "weights_sha256": hashlib.sha256(
        b"not a safetensors file").hexdigest()}))
    with pytest.raises(InputError, match="not a readable safetensors file"):
        Model.load(broken)
    shutil.copy(directory / "weights.safetensors", weights)
    (broken / "model.json").write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(InputError, match="model format 99"):
        Model.load(broken)
    rebind(broken, {**info, "preprocessing": {**info["preprocessing"], "version": 0}})
    with pytest.raises(InputError, match="preprocessing .* differs"):
        Model.load(broken)
    (broken / "model.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Model.load(broken)
    assert main(["predict", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o")]) == 2


def test_monochrome1_dicom_and_png_give_the_same_prediction_and_no_patient_id_leaks(
        frozen_model, small_png_cohort, small_dicom_cohort, tmp_path):
    loaded = Model.load(frozen_model[2])
    png_rows = read_rows(predict(loaded, load_dataset(small_png_cohort), tmp_path / "png"))
    dicom_rows = read_rows(predict(loaded, load_dataset(small_dicom_cohort), tmp_path / "dicom"))
    assert [r["subject_id"] for r in png_rows] == [r["subject_id"] for r in dicom_rows]
    # the 12-bit DICOM and the 16-bit PNG hold the same values up to a scale (x16), which the percentile
    # normalisation removes up to float32 rounding; the bf16 features turn that into differences of ~4e-5
    np.testing.assert_allclose([float(r["p_osteoporosis"]) for r in dicom_rows],
                               [float(r["p_osteoporosis"]) for r in png_rows], atol=2e-4)
    written = [p for p in (tmp_path / "dicom").rglob("*") if p.is_file()]
    assert len(written) == 4 + len(dicom_rows)  # CSV, prediction.json, figures/index.csv, the manifest, the PNGs
    for path in written:
        content = path.read_bytes()
        assert b"PHANTOM-" not in content and b"SYNTHETIC^" not in content, path


def test_single_image_with_csv_or_json_landmarks(frozen_model, dataset, tmp_path, capsys):
    subject = dataset.subjects[1]
    rows = ["landmark,x,y"] + [f"{n},{x},{y}" for n, (x, y) in zip(LANDMARKS, subject.landmarks, strict=True)]
    (tmp_path / "points.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "points.json").write_text(json.dumps({n: list(p) for n, p in zip(LANDMARKS, subject.landmarks.tolist(),
                                                                                  strict=True)}))
    results = []
    for name in ("points.csv", "points.json"):
        out = tmp_path / name.replace(".", "-")
        assert main(["predict", str(frozen_model[2]), str(subject.image_path), "--landmarks",
                     str(tmp_path / name), "--out", str(out)]) == 0
        results.append(read_rows(out / "predictions.csv"))
        assert (out / "figures" / f"{subject.image_path.stem}.png").stat().st_size > 10_000
    assert results[0] == results[1] and len(results[0]) == 1
    (tmp_path / "bad.csv").write_text("\n".join(rows[:-1]) + "\nnose,1,2\n")
    assert main(["predict", str(frozen_model[2]), str(subject.image_path), "--landmarks",
                 str(tmp_path / "bad.csv"), "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err
    assert "unknown landmark 'nose'" in error and "bad.csv: line 9" in error
    assert not (tmp_path / "bad" / "predictions.csv").exists()


def test_train_command_writes_a_model_and_refuses_to_overwrite(small_png_cohort, tmp_path, capsys):
    args = ["train", str(small_png_cohort), "--out", str(tmp_path / "m"), "--views", "1", "--epochs", "2",
            "--method", "concat"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "model.json", "weights.safetensors"]
    assert main(args) == 2 and "not empty" in capsys.readouterr().err
    assert main([*args[:3], str(tmp_path / "m2"), *args[4:], "--cv", str(tmp_path)]) == 2
    assert not (tmp_path / "m2").exists()


def labelme_file(path, subject_id, points):
    shapes = [{"label": n, "points": [list(p)], "shape_type": "point"} for n, p in points.items()]
    path.write_text(json.dumps({"imagePath": f"../images/{subject_id}.png", "shapes": shapes}))
    return path


def test_import_landmarks_from_labelme_and_coco(dataset, tmp_path):
    truth = {s.subject_id: dict(zip(LANDMARKS, s.landmarks.tolist(), strict=True)) for s in dataset.subjects[:2]}
    files = [labelme_file(tmp_path / f"{sid}.json", sid, points) for sid, points in truth.items()]
    assert import_landmarks(files, tmp_path / "labelme.csv") == 2
    coco = {"images": [{"id": i, "file_name": f"{sid}.png"} for i, sid in enumerate(truth)],
            "categories": [{"id": 1, "name": "jaw", "keypoints": list(LANDMARKS)}],
            "annotations": [{"image_id": i, "category_id": 1,
                             "keypoints": [v for n in LANDMARKS for v in (*[c + 0.5 for c in points[n]], 2)]}
                            for i, points in enumerate(truth.values())]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert main(["import-landmarks", str(tmp_path / "coco.json"), "--out", str(tmp_path / "coco.csv")]) == 0
    for name in ("labelme.csv", "coco.csv"):
        for row in read_rows(tmp_path / name):
            expected = truth[row["subject_id"]][row["landmark"]]
            assert abs(float(row["x"]) - expected[0]) < 0.01 and abs(float(row["y"]) - expected[1]) < 0.01


def test_import_landmarks_names_missing_and_unknown_points(dataset, tmp_path, capsys):
    subject = dataset.subjects[0]
    points = dict(zip(LANDMARKS, subject.landmarks.tolist(), strict=True))
    del points["angle_left"]
    points["chin"] = (1.0, 2.0)
    path = labelme_file(tmp_path / "one.json", subject.subject_id, points)
    assert main(["import-landmarks", str(path), "--out", str(tmp_path / "out.csv")]) == 2
    error = capsys.readouterr().err
    assert "'chin'" in error and "unknown landmark" in error
    assert f"subject '{subject.subject_id}': missing landmark(s) angle_left" in error
    assert not (tmp_path / "out.csv").exists()


def test_train_stores_the_rule_it_chose_and_predict_applies_it(small_png_cohort, tmp_path):
    model = tmp_path / "model"
    assert main(["train", str(small_png_cohort), "--out", str(model), "--views", "1", "--epochs", "5",
                 "--calibrate", "platt", "--target-sensitivity", "0.9"]) == 0
    info = json.loads((model / "model.json").read_text())
    rule = info["decision_rule"]
    assert "sensitivity 0.90" in rule["rule"] and "platt calibration" in rule["rule"]
    assert rule["calibration"]["method"] == "platt" and {"intercept", "slope"} <= set(rule["calibration"])
    assert "sensitivity 0.90" in (model / "README.md").read_text()
    out = tmp_path / "screened"
    assert main(["predict", str(model), str(small_png_cohort), "--out", str(out), "--no-figures"]) == 0
    rows = list(csv.DictReader(open(out / "predictions.csv", newline="")))
    assert all(r["decision"] == ("osteoporosis" if float(r["p_osteoporosis"]) >= info["threshold"] else "normal")
               for r in rows)
    run = json.loads((out / "prediction.json").read_text())
    assert run["threshold"] == info["threshold"] and run["decision_rule"] == rule["rule"]


def test_inputs_unlike_the_training_data_are_flagged(screening_model, small_png_cohort, tmp_path):
    info = json.loads((screening_model / "model.json").read_text())
    assert info["novelty"]["n"] == 4 and info["novelty"]["threshold"] > 0
    same, altered = tmp_path / "same", tmp_path / "altered"
    assert main(["predict", str(screening_model), str(small_png_cohort), "--out", str(same), "--no-figures"]) == 0
    assert main(["predict", str(screening_model), str(noise_copy(small_png_cohort, tmp_path / "noise")), "--out",
                 str(altered)]) == 0
    rows = {name: list(csv.DictReader(open(path / "predictions.csv", newline="")))
            for name, path in (("same", same), ("altered", altered))}
    assert [r["unlike_training"] for r in rows["same"]] == ["no"] * 4
    assert [r["unlike_training"] for r in rows["altered"]] == ["yes"] * 4
    assert min(float(r["novelty_distance"]) for r in rows["altered"]) > info["novelty"]["threshold"]


def test_the_screening_figure_carries_the_novelty_warning(monkeypatch, screening_model, small_png_cohort, tmp_path):
    import osteoscreen.reporting.visualise as visualise

    seen = []
    original = visualise.screening_figure
    monkeypatch.setattr(visualise, "screening_figure", lambda *args, **kwargs: seen.append(args[-1]) or
                        original(*args, **kwargs))
    noise = noise_copy(small_png_cohort, tmp_path / "noise")
    assert main(["predict", str(screening_model), str(noise), "--out", str(tmp_path / "o")]) == 0
    assert seen == [True] * 4 and len(list((tmp_path / "o" / "figures").glob("*.png"))) == 4


def test_screening_one_radiograph_extracts_only_its_plain_view(small_png_cohort, tmp_path, monkeypatch):
    """A model trained on 3 views per subject screens a radiograph from its plain view alone (the web page and
    `predict` take this path): one view's features are extracted, and the result equals `predict` on a cohort."""
    import osteoscreen.features.frozen
    from osteoscreen.deploy.model import train_model

    model = Model.load(train_model(small_png_cohort, tmp_path / "model", TrainConfig(views=3, epochs=5)))
    assert model.config.views == 3
    extracted = []
    original = osteoscreen.features.frozen._extract
    monkeypatch.setattr(osteoscreen.features.frozen, "_extract",
                        lambda cohort, backbone, config, progress: extracted.append(config.views) or original(
                            cohort, backbone, config, progress))
    subject = load_dataset(small_png_cohort).subjects[0]
    points = dict(zip(LANDMARKS, subject.landmarks.tolist(), strict=True))
    one = model.screen(subject.image_path, points)
    assert extracted == [1]
    cohort = Cohort.load(small_png_cohort)
    batch = {s.subject_id: s for s in model.predict(cohort)}[subject.subject_id]
    assert one.probability == pytest.approx(batch.probability, abs=1e-6) and one.decision == batch.decision
    np.testing.assert_allclose(one.attention, batch.attention, atol=1e-6)


def test_model_screen_names_what_is_wrong_with_its_landmarks(screening_model, small_png_cohort):
    model = Model.load(screening_model)
    subject = load_dataset(small_png_cohort).subjects[0]
    with pytest.raises(InputError, match="missing condyle_left"):
        model.screen(subject.image_path, {name: (10.0, 10.0) for name in LANDMARKS if name != "condyle_left"})
    with pytest.raises(InputError, match="8 \\(x, y\\) points"):
        model.screen(subject.image_path, np.zeros((7, 2)))


class _Lines(Writer):
    """A further output, as a new format would be: one file per radiograph and a list of them."""

    def __init__(self):
        self.started = None

    def start(self, folder, run):
        self.started = [s.subject_id for s in run.subjects]
        (folder / "lines").mkdir()

    def radiograph(self, folder, item, model):
        assert isinstance(item, Screened) and item.radiograph.pixels.ndim == 2
        (folder / "lines" / f"{item.name}.txt").write_text(f"{item.result.probability:.6f} {item.result.decision}")
        return item.subject.subject_id, item.result.probability

    def finish(self, folder, run, records):
        (folder / "lines" / "all.txt").write_text("\n".join(f"{s} {p:.6f}" for s, p in records))


def test_a_new_output_is_one_writer_handed_each_typed_result_in_input_order(frozen_model, dataset, tmp_path):
    _, _, directory = frozen_model
    writer = _Lines()
    out = tmp_path / "out"
    rows = read_rows(predict(Model.load(directory), dataset, out, figures=False, writers=[writer]))
    ids = [s.subject_id for s in dataset.subjects]
    assert writer.started == ids and [r["subject_id"] for r in rows] == ids
    assert (out / "lines" / "all.txt").read_text().splitlines() == [f"{r['subject_id']} {r['p_osteoporosis']}"
                                                                    for r in rows]
    first = (out / "lines" / f"{subject_file_names(ids)[0]}.txt").read_text().split()
    assert first == [rows[0]["p_osteoporosis"], rows[0]["decision"]]
    assert isinstance(PredictionTable(), Writer)  # predictions.csv is a writer like any other
