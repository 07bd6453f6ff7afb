"""The web API of `osteoscreen serve`: every endpoint, bad uploads, traversal attempts, no identifiers."""

import base64
import csv
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import local_client, noise_copy, subject_upload
from osteoscreen.cli import main
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.data.dataset import single_image_dataset
from osteoscreen.deploy.model import Model
from osteoscreen.deploy.screening import predict
from osteoscreen.web.app import create_app


@pytest.fixture(scope="module")
def screening(screening_model):
    return local_client(create_app(model_dir=screening_model))


def in_order(landmarks: dict) -> np.ndarray:
    return np.array([landmarks[name] for name in LANDMARKS])


def upload(data: bytes, name: str = "radiograph.png"):
    return {"file": (name, data, "application/octet-stream")}


def test_the_page_and_its_files_are_served(screening):
    page = screening.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file-input"' in page.text and 'src="app.js"' in page.text
    assert "function toImage" in screening.get("/app.js").text
    assert screening.get("/style.css").headers["content-type"].startswith("text/css")


def test_info_describes_the_mode_the_model_and_the_landmarks(screening):
    info = screening.get("/api/info").json()
    assert info["screening"] and not info["annotation"]
    assert info["model"]["method"] == "group-attention" and info["model"]["synthetic_training_data"]
    assert [item["name"] for item in info["landmarks"]] == list(LANDMARKS)
    first = info["landmarks"][0]
    assert first["label"] == "right mandibular condyle" and "image's left" in first["hint"]
    assert first["diagram"][0] < 0.5 < info["landmarks"][1]["diagram"][0]  # patient's right on the image's left


def test_render_returns_the_radiograph_as_png(screening, small_png_cohort):
    data, _, _ = subject_upload(small_png_cohort)
    response = screening.post("/api/render", files=upload(data))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    shown = Image.open(io.BytesIO(response.content))
    assert shown.size == Image.open(io.BytesIO(data)).size and shown.mode == "L"
    assert not list(Path(tempfile.gettempdir()).glob("osteoscreen-upload-*"))  # the upload was not kept


def test_screen_gives_what_osteoscreen_predict_gives(screening, screening_model, small_png_cohort, tmp_path):
    data, landmarks, subject_id = subject_upload(small_png_cohort)
    result = screening.post("/api/screen", files=upload(data), data={"landmarks": json.dumps(landmarks)}).json()
    image = tmp_path / "radiograph.png"
    image.write_bytes(data)
    points = tmp_path / "points.json"
    points.write_text(json.dumps(landmarks))
    rows = list(csv.DictReader(open(predict(Model.load(screening_model), single_image_dataset(image, points),
                                            tmp_path / "out", figures=False))))
    assert result["p_osteoporosis"] == pytest.approx(float(rows[0]["p_osteoporosis"]), abs=1e-6)
    assert result["decision"] == rows[0]["decision"] and result["threshold"] == 0.5
    assert result["decision_rule"].startswith("threshold 0.5, uncalibrated")
    assert result["unlike_training"] is False and result["novelty_distance"] == pytest.approx(
        float(rows[0]["novelty_distance"]), abs=1e-3)
    assert set(result["attention"]) == {"condyle", "angle", "premolar", "tuberosity"}
    assert sum(result["attention"].values()) == pytest.approx(1, abs=1e-5)
    assert [p["landmark"] for p in result["patches"]] == list(LANDMARKS)
    patch = Image.open(io.BytesIO(base64.b64decode(result["patches"][0]["png"].split(",")[1])))
    assert patch.size == (100, 100)


@pytest.mark.parametrize("change, message", [
    (lambda lm: {k: v for k, v in lm.items() if k != "angle_left"}, "missing angle_left"),
    (lambda lm: {**lm, "chin": [1, 2]}, "unknown landmark"),
    (lambda lm: {**lm, "premolar_right": [1e6, 5]}, "premolar_right at (1e+06, 5) lies outside"),
    (lambda lm: {**lm, "condyle_right": ["a", 5]}, "condyle_right must be [x, y] numbers"),
    (lambda lm: [1, 2], "expected an object"),
])
def test_bad_landmarks_are_named(screening, small_png_cohort, change, message):
    data, landmarks, _ = subject_upload(small_png_cohort)
    response = screening.post("/api/screen", files=upload(data), data={"landmarks": json.dumps(change(landmarks))})
    assert response.status_code == 422 and message in response.json()["error"]


def test_a_blank_upload_is_refused_not_screened(screening, small_png_cohort):
    _, landmarks, _ = subject_upload(small_png_cohort)
    blank = io.BytesIO()
    Image.new("L", (2600, 1300), 90).save(blank, format="PNG")
    response = screening.post("/api/screen", files=upload(blank.getvalue()), data={"landmarks": json.dumps(landmarks)})
    assert response.status_code == 422 and "the image has no contrast" in response.json()["error"]


def test_bad_uploads_are_refused_with_one_line(screening_model, small_png_cohort, tmp_path):
    client = local_client(create_app(model_dir=screening_model, max_upload_bytes=20_000))
    text = client.post("/api/render", files=upload(b"subject_id,image\nP1,a.png\n", "evil.png"))
    assert text.status_code == 415 and "not a DICOM, PNG, JPEG or TIFF" in text.json()["error"]
    data, _, _ = subject_upload(small_png_cohort)
    large = client.post("/api/render", files=upload(data))
    assert large.status_code == 413 and "limit" in large.json()["error"]
    corrupt_dicom = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"garbage" * 50
    broken = client.post("/api/render", files=upload(corrupt_dicom, "x.dcm"))
    assert broken.status_code == 422 and "DICOM file cannot be read" in broken.json()["error"]
    assert "Traceback" not in broken.text and "/tmp" not in broken.json()["error"]
    truncated = client.post("/api/render", files=upload(data[:5000]))
    assert truncated.status_code == 422 and "PNG file cannot be read" in truncated.json()["error"]
    assert client.post("/api/render").status_code == 422  # no file at all
    assert client.post("/api/screen", files=upload(data[:100]), data={"landmarks": "{"}).json()["error"].startswith(
        "landmarks: not valid JSON")


def test_a_dicom_upload_sends_no_patient_identifier(small_dicom_cohort, screening_model):
    client = local_client(create_app(model_dir=screening_model))
    data, landmarks, _ = subject_upload(small_dicom_cohort)
    assert b"PHANTOM-" in data and b"SYNTHETIC^" in data  # the file has them ...
    rendered = client.post("/api/render", files=upload(data, "x.dcm"))
    result = client.post("/api/screen", files=upload(data, "x.dcm"), data={"landmarks": json.dumps(landmarks)})
    assert rendered.status_code == result.status_code == 200
    for body in (rendered.content, result.content):  # ... the responses do not
        assert b"PHANTOM" not in body and b"SYNTHETIC" not in body


def test_a_dicom_upload_downloads_its_sr_and_key_image_and_nothing_else_does(small_dicom_cohort, small_png_cohort,
                                                                              screening):
    import pydicom

    from conftest import read_report

    data, landmarks, _ = subject_upload(small_dicom_cohort)
    form = {"landmarks": json.dumps(landmarks)}
    result = screening.post("/api/screen", files=upload(data, "x.dcm"), data=form).json()
    assert result["dicom"] is True
    sr = screening.post("/api/dicom/sr", files=upload(data, "x.dcm"), data=form)
    key = screening.post("/api/dicom/key-image", files=upload(data, "x.dcm"), data=form)
    assert sr.status_code == key.status_code == 200 and sr.headers["content-type"] == "application/dicom"
    assert sr.headers["content-disposition"] == 'attachment; filename="osteoscreen-upload.sr.dcm"'
    radiograph = pydicom.dcmread(io.BytesIO(data))
    report = read_report(pydicom.dcmread(io.BytesIO(sr.content)))
    assert report["p"] == pytest.approx(result["p_osteoporosis"], abs=1e-9)
    assert report["decision"].lower() == ("positive" if result["decision"] == "osteoporosis" else "negative")
    assert report["study_uid"] == radiograph.StudyInstanceUID and report["patient_id"] == radiograph.PatientID
    np.testing.assert_allclose(report["points"], in_order(landmarks) + 0.5, atol=1e-4)
    image = pydicom.dcmread(io.BytesIO(key.content))
    assert image.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and image.BurnedInAnnotation == "YES"
    assert image.StudyInstanceUID == radiograph.StudyInstanceUID
    png, png_landmarks, _ = subject_upload(small_png_cohort)
    png_form = {"landmarks": json.dumps(png_landmarks)}
    assert screening.post("/api/screen", files=upload(png), data=png_form).json()["dicom"] is False
    refused = screening.post("/api/dicom/sr", files=upload(png), data=png_form)
    assert refused.status_code == 422 and refused.json()["error"].startswith("DICOM results need a DICOM radiograph")
    assert screening.post("/api/dicom/other", files=upload(data, "x.dcm"), data=form).status_code == 404
    off = screening.post("/api/send", files=upload(data, "x.dcm"), data=form)
    assert off.status_code == 404 and "--send" in off.json()["error"]
    assert screening.get("/api/info").json()["pacs"] is None
    assert not list(Path(tempfile.gettempdir()).glob("osteoscreen-upload-*"))


def test_annotation_endpoints_read_and_save_landmarks_atomically_with_a_backup(annotation_dataset):
    data_dir, removed = annotation_dataset
    before = (data_dir / "landmarks.csv").read_text()
    client = local_client(create_app(data_dir=data_dir))
    subjects = client.get("/api/subjects").json()
    assert [s["placed"] for s in subjects] == [0, 8, 8, 8]
    assert client.get("/api/subjects/0/landmarks").json()["landmarks"] == dict.fromkeys(LANDMARKS)
    assert client.get("/api/subjects/1/image").headers["content-type"] == "image/png"
    assert client.put("/api/subjects/0/landmarks", json={"landmarks": {"condyle_right": [1, 2]}}).status_code == 422
    assert (data_dir / "landmarks.csv").read_text() == before  # a refused save changes nothing
    saved = client.put("/api/subjects/0/landmarks", json={"landmarks": removed})
    assert saved.status_code == 200 and saved.json()["complete"] == 4
    assert [p.read_text() for p in data_dir.glob("landmarks.csv.*.bak")] == [before]
    rows = [r for r in csv.DictReader(open(data_dir / "landmarks.csv")) if r["subject_id"] == subjects[0]["subject_id"]]
    written = {r["landmark"]: [float(r["x"]), float(r["y"])] for r in rows}
    np.testing.assert_allclose(in_order(written), in_order(removed), atol=0.005)
    np.testing.assert_allclose(in_order(client.get("/api/subjects/0/landmarks").json()["landmarks"]),
                               in_order(removed))
    assert main(["validate", str(data_dir)]) == 0  # the saved file is a valid landmarks.csv


@pytest.mark.parametrize("path", ["/api/subjects/..%2F..%2F..%2Fetc%2Fpasswd/image", "/api/subjects/-1/image",
                                  "/api/subjects/4/landmarks", "/api/subjects/1e9/image", "/..%2Fpyproject.toml",
                                  "/static/..%2F..%2Fpyproject.toml", "/%2e%2e/%2e%2e/etc/passwd"])
def test_traversal_attempts_reach_no_file(annotation_dataset, path):
    client = local_client(create_app(data_dir=annotation_dataset[0]))
    response = client.get(path)
    assert response.status_code in (404, 422)
    assert "root:" not in response.text and "[project]" not in response.text


def test_each_mode_answers_only_when_it_is_on(screening, annotation_dataset, small_png_cohort):
    assert screening.get("/api/subjects").status_code == 404
    annotation = local_client(create_app(data_dir=annotation_dataset[0]))
    data, landmarks, _ = subject_upload(small_png_cohort)
    refused = annotation.post("/api/screen", files=upload(data), data={"landmarks": json.dumps(landmarks)})
    assert refused.status_code == 404 and "--model" in refused.json()["error"]
    with pytest.raises(InputError, match=r"needs model_dir= \(a screening model"):
        create_app()


def test_serve_usage_errors_exit_2(capsys, tmp_path):
    assert main(["serve"]) == 2 and "needs --model (a screening model: screening), --data (a dataset: annotation)" \
        in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert main(["serve", "--data", str(tmp_path), "--max-upload-mb", "0"]) == 2


# Hardening: every input error is a 4xx, never a traceback (classes 3, 6, 10, 12 and the Host/Origin guard)

def no_traceback(caplog, capsys) -> None:
    logged = caplog.text + capsys.readouterr().err
    assert "Traceback" not in logged


@pytest.mark.parametrize("landmarks, message", [
    ("1" * 400, "integer of 400 digits"),
    ('{"condyle_right": [' + "1" * 400 + ", 2]}", "integer of 400 digits"),
    ('{"condyle_right": [1e999, 2]}', "overflows"),
    ('{"condyle_right": [NaN, 2]}', "NaN is not a finite number"),
    ("[" * 30_000 + "]" * 30_000, "nested deeper than 64 levels"),
    ("[" * 100_000 + "]" * 100_000, "exceeds the limit"),
    ('{"a": "' + "x" * 70_000 + '"}', "exceeds the limit"),
])
def test_screen_refuses_unbounded_or_non_finite_json_with_422(screening, small_png_cohort, caplog, capsys, landmarks,
                                                             message):
    data, _, _ = subject_upload(small_png_cohort)
    response = screening.post("/api/screen", files=upload(data), data={"landmarks": landmarks})
    assert response.status_code == 422 and message in response.json()["error"]
    no_traceback(caplog, capsys)


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b"[" * 30_000 + b"]" * 30_000,
                                  b'{"landmarks": {"condyle_right": [' + b"9" * 400 + b", 1]}}",
                                  b'{"landmarks": 1e400}', b"\xff\xfe not utf-8"])
def test_saving_landmarks_refuses_bad_json_with_422(annotation_dataset, caplog, capsys, body):
    data_dir, _ = annotation_dataset
    before = (data_dir / "landmarks.csv").read_text()
    client = local_client(create_app(data_dir=data_dir))
    response = client.put("/api/subjects/0/landmarks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"].startswith("body: ")
    assert (data_dir / "landmarks.csv").read_text() == before
    no_traceback(caplog, capsys)


def test_an_unreadable_subject_image_is_422_on_every_annotation_endpoint(annotation_dataset, caplog, capsys):
    data_dir, removed = annotation_dataset
    client = local_client(create_app(data_dir=data_dir))
    (data_dir / "images" / "P001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for response in (client.get("/api/subjects/0/image"),
                     client.put("/api/subjects/0/landmarks", json={"landmarks": removed})):
        assert response.status_code == 422 and "P001.png: cannot read image" in response.json()["error"]
    no_traceback(caplog, capsys)


def test_an_unexpected_error_is_a_500_with_one_log_line(screening_model, small_png_cohort, monkeypatch, caplog, capsys):
    import osteoscreen.deploy.model

    client = local_client(create_app(model_dir=screening_model))
    monkeypatch.setattr(osteoscreen.deploy.model, "predict_proba", lambda *a: (_ for _ in ()).throw(RuntimeError("x")))
    data, landmarks, _ = subject_upload(small_png_cohort)
    response = client.post("/api/screen", files=upload(data), data={"landmarks": json.dumps(landmarks)})
    assert response.status_code == 500 and response.json() == {"error": "internal error (the server log has one "
                                                                         "line on it)"}
    assert [r.getMessage() for r in caplog.records if r.name == "osteoscreen.web"] == [
        "internal error on POST /api/screen: RuntimeError: x"]
    no_traceback(caplog, capsys)


def test_an_over_limit_upload_is_413_whatever_its_framing(screening_model, small_png_cohort):
    client = local_client(create_app(model_dir=screening_model, max_upload_bytes=20_000))
    data, landmarks, _ = subject_upload(small_png_cohort)
    boundary = "osteoscreen-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.png\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()

    def chunked():
        for start in range(0, len(body), 4096):
            yield body[start:start + 4096]

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    for endpoint in ("/api/render", "/api/screen"):
        declared = client.post(endpoint, content=body, headers=headers)
        streamed = client.post(endpoint, content=chunked(), headers=headers)
        assert "content-length" not in streamed.request.headers
        assert declared.status_code == streamed.status_code == 413
        assert "20000" not in streamed.json()["error"] and "limit" in streamed.json()["error"]


def test_an_image_over_the_decoded_size_budget_is_refused_before_decoding(screening, monkeypatch):
    from osteoscreen.io import imageio

    buffer = io.BytesIO()
    Image.new("RGBA", (100, 100)).save(buffer, format="PNG")
    monkeypatch.setattr(imageio, "MAX_DECODED_BYTES", 30_000)
    response = screening.post("/api/render", files=upload(buffer.getvalue()))
    assert response.status_code == 422 and "over the limit" in response.json()["error"]


def test_decodes_beyond_the_limit_are_answered_503_at_once(screening_model, small_png_cohort, monkeypatch):
    import threading

    import osteoscreen.web.app

    started, release = threading.Event(), threading.Event()
    real = osteoscreen.web.app.decode_upload

    def slow(data):
        started.set()
        release.wait(10)
        return real(data)

    monkeypatch.setattr(osteoscreen.web.app, "decode_upload", slow)
    client = local_client(create_app(model_dir=screening_model, max_decodes=1))
    data, _, _ = subject_upload(small_png_cohort)
    first: list = []
    worker = threading.Thread(target=lambda: first.append(client.post("/api/render", files=upload(data))))
    worker.start()
    assert started.wait(10)
    busy = client.post("/api/render", files=upload(data))
    release.set()
    worker.join(10)
    assert busy.status_code == 503 and "busy" in busy.json()["error"]
    assert first[0].status_code == 200
    assert client.post("/api/render", files=upload(data)).status_code == 200  # the slot was given back


@pytest.mark.parametrize("headers", [{"host": "evil.example"}, {"host": "evil.example:8000"},
                                     {"origin": "http://evil.example"}, {"origin": "null"},
                                     {"origin": "http://127.0.0.1.evil.example:8000"}])
def test_requests_for_another_host_or_from_another_site_are_refused(screening, headers):
    response = screening.get("/api/info", headers=headers)
    assert response.status_code == 403 and "refused" in response.json()["error"]


def test_the_page_on_this_machine_is_served_without_cors_headers(screening):
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000"):
        response = screening.get("/api/info", headers={"host": host, "origin": f"http://{host}"})
        assert response.status_code == 200, host
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


def test_annotation_saves_keep_unknown_columns_untouched_rows_and_ten_backups(annotation_dataset):
    data_dir, removed = annotation_dataset
    rows = list(csv.reader(open(data_dir / "landmarks.csv", newline="")))
    rows[0].append("annotator")
    for number, row in enumerate(rows[1:]):
        row.append(f"reader-{number % 3}")
    rows[1][2] = "301.625"  # more decimals than a save writes
    with open(data_dir / "landmarks.csv", "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    client = local_client(create_app(data_dir=data_dir))
    for shift in range(12):
        moved = {name: [x + shift, y] for name, (x, y) in removed.items()}
        assert client.put("/api/subjects/0/landmarks", json={"landmarks": moved}).status_code == 200
    saved = list(csv.reader(open(data_dir / "landmarks.csv", newline="")))
    assert saved[:len(rows)] == rows  # every row the file had, as it was, annotator column included
    added = saved[len(rows):]
    assert len(added) == 8 and all(row[4] == "" for row in added)
    backups = sorted(data_dir.glob("landmarks.csv.*.bak"))
    assert len(backups) == 10
    assert float(list(csv.reader(open(backups[-1])))[-1][2]) == pytest.approx(removed["tuberosity_left"][0] + 10,
                                                                              abs=0.01)


def test_the_page_sees_a_jpeg_as_its_exif_orientation_says(screening):
    pixels = np.zeros((20, 40), np.uint8)
    pixels[:5, :10] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=100)
    shown = Image.open(io.BytesIO(screening.post("/api/render", files=upload(buffer.getvalue(), "r.jpg")).content))
    assert shown.size == (20, 40)  # width x height as a viewer shows it, the same pixels `predict` reads


def test_screen_warns_when_the_upload_is_unlike_the_training_data(screening, small_png_cohort, tmp_path):
    noise = noise_copy(small_png_cohort, tmp_path / "noise")
    data, landmarks, _ = subject_upload(noise)
    result = screening.post("/api/screen", files=upload(data), data={"landmarks": json.dumps(landmarks)}).json()
    assert result["unlike_training"] is True and result["p_osteoporosis"] >= 0


def test_suggest_gives_the_landmark_models_points_in_both_modes_and_warns_on_a_photo(planted, planted_lmodel,
                                                                                     screening_model, tmp_path):
    root, model = planted
    data_dir = Path(shutil.copytree(root, tmp_path / "data"))
    client = local_client(create_app(model_dir=screening_model, data_dir=data_dir, landmark_model_dir=planted_lmodel))
    info = client.get("/api/info").json()
    assert info["suggest"] and info["landmark_model"]["training_radiographs"] == 12
    expected = model.suggest(data_dir / "images" / "S0.png")
    uploaded = client.post("/api/suggest", files=upload((data_dir / "images" / "S0.png").read_bytes())).json()
    annotated = client.get("/api/subjects/0/suggestion").json()
    for answer in (uploaded, annotated):
        np.testing.assert_allclose(in_order(answer["landmarks"]), expected.points, atol=0.005)
        assert [p["confidence"] for p in answer["points"]] == [round(float(c), 3) for c in expected.confidence]
        assert [p["flagged"] for p in answer["points"]] == expected.flagged.tolist() and answer["warnings"] == []
    assert annotated["subject_id"] == "S0"
    assert (data_dir / "landmarks.csv").read_bytes() == (root / "landmarks.csv").read_bytes()  # nothing saved

    square = io.BytesIO()
    Image.fromarray(np.full((600, 600), 128, dtype=np.uint8)).save(square, format="PNG")
    photo = client.post("/api/suggest", files=upload(square.getvalue())).json()
    assert all(p["flagged"] for p in photo["points"])
    assert len(photo["warnings"]) == 1 and "unlike a panoramic radiograph" in photo["warnings"][0]


def test_suggestion_answers_only_with_a_landmark_model(screening, small_png_cohort):
    data, _, _ = subject_upload(small_png_cohort)
    assert not screening.get("/api/info").json()["suggest"]
    refused = screening.post("/api/suggest", files=upload(data))
    assert refused.status_code == 404 and "--landmarks-model LMODEL" in refused.json()["error"]
    assert screening.get("/api/subjects/0/suggestion").status_code == 404


def test_serve_refuses_a_tampered_landmark_model(planted, planted_lmodel, tmp_path, capsys):
    tampered = Path(shutil.copytree(planted_lmodel, tmp_path / "lmodel"))
    info = tampered / "landmark-model.json"
    info.write_text(info.read_text().replace('"epochs": 30', '"epochs": 31'))
    assert main(["serve", "--data", str(planted[0]), "--landmarks-model", str(tampered), "--port", "0"]) == 2
    assert "landmark-model.json" in capsys.readouterr().err
