"""predict --dicom-out: a TID 1500 SR and a key image per DICOM radiograph, valid (dciodvfy), read back by highdicom
with every value, in the radiograph's study; the patient's identity in these files only."""

import csv
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from conftest import read_report
from osteoscreen.cli import main
from osteoscreen.core.landmarks import GROUP_OF_LANDMARK, GROUPS, LANDMARKS
from osteoscreen.deploy.dicom_results import IDENTITY_KEYWORDS, REFERENCE_KEYWORDS, identity_and_reference


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_value_of_the_screening_reads_back_from_the_sr(dicom_results, small_dicom_cohort, screening_model):
    predictions = {row["subject_id"]: row for row in rows(dicom_results / "predictions.csv")}
    landmarks = {}
    for row in rows(small_dicom_cohort / "landmarks.csv"):
        landmarks.setdefault(row["subject_id"], {})[row["landmark"]] = (float(row["x"]), float(row["y"]))
    index = rows(dicom_results / "dicom" / "index.csv")
    assert [r["subject_id"] for r in index] == list(predictions)
    every_uid = []
    for entry in index:
        subject = entry["subject_id"]
        source = pydicom.dcmread(small_dicom_cohort / "images" / f"{subject}.dcm", stop_before_pixels=True)
        report = read_report(dicom_results / "dicom" / entry["sr"])
        row = predictions[subject]
        assert report["title"] == "126000" and report["verification"] == "UNVERIFIED"
        assert "RESEARCH USE" in report["series_description"]
        assert report["study_uid"] == source.StudyInstanceUID and report["patient_id"] == source.PatientID
        assert report["library"] == [source.SOPInstanceUID]
        assert report["p"] == pytest.approx(float(row["p_osteoporosis"]), abs=5e-7)
        assert report["decision"] == ("Positive" if row["decision"] == "osteoporosis" else "Negative")
        assert report["threshold"] == 0.5 and report["task"] == "OSTEOPOROSIS-VS-NORMAL"
        assert report["distance"] == pytest.approx(float(row["novelty_distance"]), abs=5e-4)
        assert report["unlike"] == ("Yes" if row["unlike_training"] == "yes" else "No")
        assert report["landmarks"] == list(LANDMARKS) and report["graphic_types"] == {"POINT"}
        # highdicom's (column, row) with 0 at the pixel's corner: our pixel-centre coordinates + 0.5
        expected = np.array([landmarks[subject][name] for name in LANDMARKS]) + 0.5
        np.testing.assert_allclose(report["points"], expected, atol=1e-4)
        np.testing.assert_allclose(report["attention"], [float(row[f"att_{GROUPS[g]}"]) for g in GROUP_OF_LANDMARK],
                                   atol=5e-7)
        assert report["sites"] == [("Maxilla" if name.startswith("tuberosity") else "Mandible",
                                    name.split("_")[1].capitalize()) for name in LANDMARKS]
        name, version, parameters = report["algorithm"]
        digest = (screening_model / "model.json").read_text().split('"weights_sha256": "')[1][:64]
        assert name == "osteoscreen group-attention" and version and f"model sha256 {digest}" in parameters
        assert report["equipment"][0] == "osteoscreen project"
        every_uid += [report["image_tracking_uid"], *report["tracking_uids"]]
    assert len(set(every_uid)) == len(every_uid) == 9 * len(index)  # its own tracking UID per group (OHIF)


def test_the_key_image_is_a_burned_in_secondary_capture_in_the_same_study(dicom_results, small_dicom_cohort):
    for entry in rows(dicom_results / "dicom" / "index.csv"):
        key = pydicom.dcmread(dicom_results / "dicom" / entry["key_image"])
        sr = pydicom.dcmread(dicom_results / "dicom" / entry["sr"])
        source = pydicom.dcmread(small_dicom_cohort / "images" / f"{entry['subject_id']}.dcm")
        assert key.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and key.BurnedInAnnotation == "YES"
        assert key.StudyInstanceUID == sr.StudyInstanceUID == source.StudyInstanceUID
        assert len({key.SeriesInstanceUID, sr.SeriesInstanceUID, source.SeriesInstanceUID}) == 3  # new series
        assert key.pixel_array.shape == (950, 1200, 3) and key.pixel_array.std() > 10  # the figure, not a blank


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_dciodvfy_finds_no_error_in_any_result(dicom_results):
    files = sorted((dicom_results / "dicom").glob("*.dcm"))
    assert len(files) == 8
    for path in files:
        answer = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (answer.stdout + answer.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], path


def test_the_dicom_files_alone_carry_the_identity_and_nothing_else_of_the_header(dicom_results,
                                                                                  small_dicom_cohort):
    for path in (p for p in dicom_results.rglob("*") if p.is_file()):
        content = path.read_bytes()
        carries = b"PHANTOM-" in content and b"SYNTHETIC^" in content
        assert carries == path.name.endswith(".dcm"), path
    source = pydicom.dcmread(small_dicom_cohort / "images" / "P001.dcm", stop_before_pixels=True)
    for name in ("P001.sr.dcm", "P001.key.dcm"):
        result = pydicom.dcmread(dicom_results / "dicom" / name, stop_before_pixels=True)
        copied = {element.keyword for element in source if element.keyword in result and element.keyword not in
                  ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality",
                   "SeriesNumber", "InstanceNumber", "Rows", "Columns", "SamplesPerPixel", "BitsAllocated",
                   "BitsStored", "HighBit", "PixelRepresentation", "PhotometricInterpretation", "Manufacturer",
                   "ContentDate", "ContentTime", "ImageType", "BurnedInAnnotation", "PatientOrientation")
                  and result[element.keyword].value == element.value}
        assert copied <= set(IDENTITY_KEYWORDS + REFERENCE_KEYWORDS), (name, copied)
        assert "ImageComments" not in result and result.Manufacturer == "osteoscreen project"


def test_writing_again_gives_the_same_instances(screening_model, small_dicom_cohort, dicom_results, tmp_path):
    assert main(["predict", str(screening_model), str(small_dicom_cohort), "--out", str(tmp_path / "again"),
                 "--dicom-out", "--no-figures"]) == 0
    for path in sorted((dicom_results / "dicom").glob("*.dcm")):
        first, second = (pydicom.dcmread(p, stop_before_pixels=True) for p in (path, tmp_path / "again/dicom" /
                                                                              path.name))
        assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (second.SOPInstanceUID, second.SeriesInstanceUID)


def test_raster_inputs_and_headers_without_uids_get_one_line_and_nothing_written(
        screening_model, small_png_cohort, small_dicom_cohort, tmp_path, capsys):
    out = tmp_path / "png"
    assert main(["predict", str(screening_model), str(small_png_cohort), "--out", str(out), "--dicom-out"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("osteoscreen: error: --dicom-out needs DICOM inputs") and "P001.png" in message
    assert "\n" not in message and not out.exists()
    header = pydicom.dcmread(small_dicom_cohort / "images" / "P002.dcm")
    del header.StudyInstanceUID
    header.save_as(tmp_path / "bare.dcm")
    with pytest.raises(ValueError, match=r"bare\.dcm: DICOM output needs the input's StudyInstanceUID"):
        identity_and_reference(tmp_path / "bare.dcm")
    assert main(["predict", str(screening_model), str(small_png_cohort), "--out", str(tmp_path / "x"),
                 "--send", "PACS@127.0.0.1:104"]) == 2
    assert "add --dicom-out" in capsys.readouterr().err
