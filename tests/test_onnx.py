"""osteoscreen export and predict --runtime onnx: the exported graph screens as the PyTorch model does (same
decisions, p and attention within 1e-4, the same novelty flags), for frozen, +clinical, calibrated and fine-tuned
models; an altered export is refused with one line."""

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest

from conftest import read_report
from osteoscreen.cli import main
from osteoscreen.core.landmarks import GROUPS, LANDMARKS
from osteoscreen.data.cohort import Cohort
from osteoscreen.data.patches import PatchConfig
from osteoscreen.deploy.model import Model
from osteoscreen.deploy.onnx_export import CONTRACT_FILE, ONNX_FILE, export_model
from osteoscreen.deploy.onnx_model import OnnxModel
from osteoscreen.evaluation.operating_point import FittedRule
from osteoscreen.training.config import TrainConfig

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'osteoscreen[onnx]')")


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def exported(screening_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "export"
    assert main(["export", str(screening_model), "--out", str(out)]) == 0
    return out


def test_the_contract_describes_the_graph_and_the_decision(exported, screening_model):
    contract = json.loads((exported / CONTRACT_FILE).read_text())
    info = json.loads((screening_model / "model.json").read_text())
    size = info["preprocessing"]["input_size"]
    assert contract["model"] == info
    assert contract["decision"]["threshold"] == info["threshold"]
    assert contract["landmarks"] == list(LANDMARKS)
    assert [(i["name"], i["shape"]) for i in contract["inputs"]] == [("patches", ["batch", 8, 1, size, size])]
    assert [o["name"] for o in contract["outputs"]] == ["p_osteoporosis", "attention", "novelty_distance"]
    assert contract["novelty"]["threshold"] == info["novelty"]["threshold"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["batch", 8, 1, size, size]]
    p, attention, distance = session.run(None, {"patches": np.full((3, 8, 1, size, size), 0.5, np.float32)})
    assert p.shape == (3,) and attention.shape == (3, len(GROUPS)) and distance.shape == (3,)


def test_predict_with_onnx_gives_the_torch_decisions_and_dicom_results(exported, small_dicom_cohort, dicom_results,
                                                                       tmp_path):
    out = tmp_path / "run"
    assert main(["predict", str(exported), str(small_dicom_cohort), "--out", str(out), "--runtime", "onnx",
                 "--dicom-out"]) == 0
    torch_rows, onnx_rows = rows(dicom_results / "predictions.csv"), rows(out / "predictions.csv")
    assert [r["subject_id"] for r in onnx_rows] == [r["subject_id"] for r in torch_rows]
    for ours, theirs in zip(onnx_rows, torch_rows, strict=True):
        assert ours["decision"] == theirs["decision"] and ours["unlike_training"] == theirs["unlike_training"]
        for column in ["p_osteoporosis", *[f"att_{g}" for g in GROUPS]]:
            assert float(ours[column]) == pytest.approx(float(theirs[column]), abs=1e-4), column
        assert float(ours["novelty_distance"]) == pytest.approx(float(theirs["novelty_distance"]), rel=1e-3)
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == sorted(
        p.name for p in (dicom_results / "figures").glob("*.png"))
    for row in rows(out / "dicom" / "index.csv"):
        report = read_report(out / "dicom" / row["sr"])
        torch_report = read_report(dicom_results / "dicom" / row["sr"])
        assert report["decision"] == torch_report["decision"]
        assert report["p"] == pytest.approx(torch_report["p"], abs=1e-4)
        assert report["study_uid"] == torch_report["study_uid"]
        uid = pydicom.dcmread(out / "dicom" / row["sr"]).SOPInstanceUID  # another network: its own instance
        assert uid != pydicom.dcmread(dicom_results / "dicom" / row["sr"]).SOPInstanceUID


@pytest.mark.parametrize("method, config, calibration", [
    ("concat+clinical", TrainConfig(views=1, epochs=3), {"method": "platt", "intercept": 0.4, "slope": 1.7}),
    ("group-attention", TrainConfig(mode="finetune", epochs=1, native_res=True),
     {"method": "temperature", "temperature": 2.5}),
], ids=["frozen-clinical-platt", "finetune-temperature"])
def test_the_graph_equals_the_model_for_clinical_calibrated_and_finetuned_models(method, config, calibration,
                                                                                 small_png_cohort, tmp_path):
    cohort = Cohort.load(small_png_cohort, PatchConfig())
    fitted = Model.fit(cohort, method, config)
    calibrated = FittedRule(calibration, 0.45, "a test's rule")
    Model(fitted.fitted, calibrated, fitted.novelty, cohort.summary()).save(tmp_path / "model")
    export_model(tmp_path / "model", tmp_path / "export")
    model, onnx = Model.load(tmp_path / "model"), OnnxModel.load(tmp_path / "export")
    (p, attention, distance), (p_onnx, attention_onnx, distance_onnx) = model.outputs(cohort), onnx.outputs(cohort)
    assert np.abs(p - p_onnx).max() < 1e-4
    assert (p >= 0.45).tolist() == (p_onnx >= 0.45).tolist()
    assert (attention is None) == (attention_onnx is None) == (method == "concat+clinical")
    contract = json.loads((tmp_path / "export" / CONTRACT_FILE).read_text())
    assert [o["name"] for o in contract["outputs"]] == ["p_osteoporosis", *([] if attention is None else
                                                                           ["attention"]), "novelty_distance"]
    if attention is not None:
        assert np.abs(attention - attention_onnx).max() < 1e-4
    np.testing.assert_allclose(distance_onnx, distance, rtol=1e-3)
    assert p.min() != p.max()  # the subjects differ: the comparison is not of constants


def test_an_altered_or_wrong_export_is_refused_with_one_line(exported, screening_model, small_png_cohort, tmp_path,
                                                            capsys):
    def refused(folder, expected):
        capsys.readouterr()
        assert main(["predict", str(folder), str(small_png_cohort), "--out", str(tmp_path / "out"),
                     "--runtime", "onnx"]) == 2
        error = capsys.readouterr().err.strip()
        assert expected in error and len(error.splitlines()) == 1 and "Traceback" not in error
        assert not (tmp_path / "out").exists()

    edited = shutil.copytree(exported, tmp_path / "edited")
    contract = json.loads((edited / CONTRACT_FILE).read_text())
    contract["decision"]["threshold"] = 0.9
    (edited / CONTRACT_FILE).write_text(json.dumps(contract))
    refused(edited, "edited after the model was exported")
    damaged = shutil.copytree(exported, tmp_path / "damaged")
    data = bytearray((damaged / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / ONNX_FILE).write_bytes(bytes(data))
    refused(damaged, "does not match the SHA-256")
    refused(screening_model, "is not an `osteoscreen export` folder")
    assert main(["export", str(screening_model), "--out", str(exported)]) == 2  # never over an earlier export
    assert "Traceback" not in capsys.readouterr().err
