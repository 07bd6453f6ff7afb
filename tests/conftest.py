"""Shared fixtures: small phantom cohorts generated once per test session, a planted landmark cohort and its
landmark model; web-test helpers; each test worker's own temporary folder. The fixtures that write folders are
built once for all test workers (`built_once`)."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from PIL import Image

from osteoscreen.core.landmarks import GROUPS, LANDMARKS
from osteoscreen.core.utils import available_cores
from osteoscreen.data.cohort import Cohort
from osteoscreen.data.patches import PatchConfig
from osteoscreen.data.phantom.bone import bone_parameters, trabecular_field
from osteoscreen.data.phantom.synthesis import PhantomConfig, synthesise
from osteoscreen.data.subject_patches import SubjectPatches
from osteoscreen.deploy.model import train_model
from osteoscreen.landmarking.model import LandmarkConfig, LandmarkModel
from osteoscreen.training.config import TrainConfig


def pytest_configure(config):
    """`make test` runs the suite in one pytest-xdist worker per core. Each worker gets a temporary folder of its
    own (TMPDIR, for this process and what it starts), so a test that checks nothing was left there sees only its
    own worker's files; removed when the worker ends. And each gets its share of the cores as torch's intra-op
    threads, OpenBLAS's and OMP_NUM_THREADS for what it starts, unless the caller set OMP_NUM_THREADS: two workers of
    two threads each on two cores spent a quarter of the suite's CPU time in waiting OpenMP and BLAS threads (user
    CPU 8 min 25 s - 9 min 05 s -> 6 min 49-55 s, wall 4 min 37-49 s -> 4 min 07-21 s). The tests of thread counts
    set their own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        folder = Path(tempfile.gettempdir()) / f"osteoscreen-tests-{worker}-{os.getpid()}"
        folder.mkdir()
        os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
        config.worker_tmp = folder
        if "OMP_NUM_THREADS" not in os.environ:
            import torch  # loaded by now, after osteoscreen pinned its kernels
            from threadpoolctl import threadpool_limits

            share = max(1, available_cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
            os.environ["OMP_NUM_THREADS"] = str(share)
            torch.set_num_threads(share)
            threadpool_limits(share)  # NumPy's OpenBLAS and the other native pools already loaded


def pytest_unconfigure(config):
    if getattr(config, "worker_tmp", None) is not None:
        shutil.rmtree(config.worker_tmp, ignore_errors=True)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` (which writes into the empty `folder` and returns a path in it) run once per test session,
    its result shared by the test workers: the first worker to ask builds it under a file lock in the session's
    common temporary folder, the others wait and reuse it (pytest-xdist's recipe for session fixtures). Tests
    only read what it returns; one that changes it copies it first."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    folder = tmp_path_factory.getbasetemp().parent / "built-once" / name
    with FileLock(f"{folder}.lock"):
        done = folder.with_name(f"{name}.done")
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            done.write_text(str(build(folder).relative_to(folder)))
        return folder / done.read_text()


@pytest.fixture(scope="session")
def small_png_cohort(tmp_path_factory):
    """4 subjects (2 osteoporosis), PNG, seed 3."""
    return built_once(tmp_path_factory, "png",
                      lambda folder: synthesise(folder / "data", PhantomConfig(n=4, positives=2, seed=3)))


@pytest.fixture(scope="session")
def small_dicom_cohort(tmp_path_factory):
    """The same 4 subjects as small_png_cohort, written as DICOM (subject 3 is MONOCHROME1)."""
    return built_once(tmp_path_factory, "dicom", lambda folder: synthesise(
        folder / "data", PhantomConfig(n=4, positives=2, seed=3, image_format="dicom")))


def make_planted_cohort(n: int, seed: int, group: str = "premolar") -> Cohort:
    """n subjects (alternating labels) whose `group` patches carry the label (T = -3.5 vs +0.5); every other
    patch has a label-free random T-score (group "none": a null cohort). No radiographs: context crops are
    generated directly."""
    rng = np.random.default_rng(seed)
    config = PatchConfig()
    size = int(np.ceil(config.patch_px * config.context))
    patches = []
    for index in range(n):
        label = index % 2
        crops = []
        for patch in range(8):
            carries_signal = GROUPS[patch // 2] == group
            t_score = (-3.5 if label else 0.5) if carries_signal else rng.uniform(-3.5, 0.5)
            crops.append(0.2 + 0.6 * trabecular_field((size, size), bone_parameters(t_score), 0.1, rng))
        patches.append(SubjectPatches(f"S{index:02d}", label, np.stack(crops).astype(np.float32), config.patch_px, 0))
    return Cohort(patches, config)


@pytest.fixture(scope="session")
def planted_cohort():
    """Factory of planted cohorts: planted_cohort(n, seed) -> Cohort."""
    return make_planted_cohort


def noise_copy(source: Path, out: Path) -> Path:
    """A copy of the dataset whose radiographs are replaced by uniform noise of the same size and bit depth:
    inputs unlike any radiograph a model was trained on."""
    shutil.copytree(source, out)
    rng = np.random.default_rng(0)
    for path in (out / "images").iterdir():
        with Image.open(path) as image:
            size, mode = image.size, image.mode
        noise = rng.integers(0, 65536 if mode.startswith("I") else 256, (size[1], size[0]))
        Image.fromarray(noise.astype(np.uint16 if mode.startswith("I") else np.uint8)).save(path)
    return out


def subject_upload(dataset_dir: Path, index: int = 0) -> tuple[bytes, dict[str, list[float]], str]:
    """(image file bytes, {landmark: [x, y]}, subject id) of the dataset's index-th subject."""
    rows = list(csv.DictReader(open(dataset_dir / "subjects.csv", newline="")))
    subject = rows[index]
    landmarks = {r["landmark"]: [float(r["x"]), float(r["y"])]
                 for r in csv.DictReader(open(dataset_dir / "landmarks.csv", newline=""))
                 if r["subject_id"] == subject["subject_id"]}
    return (dataset_dir / subject["image"]).read_bytes(), landmarks, subject["subject_id"]


def dataset_missing_one_subject(source: Path, out: Path) -> tuple[Path, dict[str, list[float]]]:
    """A copy of the dataset whose first subject has no landmarks; returns it and the removed landmarks."""
    shutil.copytree(source, out)
    _, removed, subject_id = subject_upload(source, 0)
    rows = list(csv.DictReader(open(out / "landmarks.csv", newline="")))
    with open(out / "landmarks.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject_id", "landmark", "x", "y"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for r in rows if r["subject_id"] != subject_id)
    return out, removed


#: Where the planted landmarks sit, as fractions of (width, height): mirror-symmetric pairs, right (image left)
#: first, like a PR's.
TEMPLATE = np.array([(u, v) for u, v in ((0.15, 0.3), (0.18, 0.75), (0.36, 0.8), (0.25, 0.5))
                     for u, v in ((u, v), (1 - u, v))])
SIZE = (400, 800)  # height, width px


def planted_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A radiograph-sized image with 8 bright blobs on a noisy background: (pixels [H, W] in [0, 1], points [8, 2])."""
    height, width = SIZE
    points = TEMPLATE * [width, height] + rng.normal(0, 12, TEMPLATE.shape)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = 0.2 + 0.03 * rng.standard_normal(SIZE)
    for x, y in points:
        pixels += 0.6 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 9.0 ** 2))
    return np.clip(pixels, 0, 1), points


def write_planted(root: Path, n: int, seed: int) -> Path:
    """A dataset directory of n planted radiographs (16-bit PNG, spacing 0.1 mm) with their landmarks.csv."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    with open(root / "subjects.csv", "w", newline="") as subjects, open(root / "landmarks.csv", "w",
                                                                          newline="") as landmarks:
        subject_rows, landmark_rows = csv.writer(subjects), csv.writer(landmarks)
        subject_rows.writerow(["subject_id", "image", "label", "pixel_spacing_mm"])
        landmark_rows.writerow(["subject_id", "landmark", "x", "y"])
        for i in range(n):
            pixels, points = planted_image(rng)
            Image.fromarray((pixels * 65535).round().astype(np.uint16)).save(root / "images" / f"S{i}.png")
            subject_rows.writerow([f"S{i}", f"images/S{i}.png", "normal", "0.1"])
            landmark_rows.writerows([f"S{i}", name, f"{x:.1f}", f"{y:.1f}"]
                                    for name, (x, y) in zip(LANDMARKS, points, strict=True))
    return root


SMALL = LandmarkConfig(view=(96, 192), epochs=30, batch=6)


@pytest.fixture(scope="session")
def planted_lmodel(tmp_path_factory) -> Path:
    """A landmark model folder (LMODEL) trained with the SMALL configuration on 12 planted radiographs, which lie
    in the folder's sibling `data`."""
    def build(folder: Path) -> Path:
        return LandmarkModel.fit(write_planted(folder / "data", 12, seed=0), SMALL).save(folder / "lmodel")

    return built_once(tmp_path_factory, "planted", build)


@pytest.fixture(scope="session")
def planted(planted_lmodel):
    """(dataset directory of the 12 planted radiographs, the model trained on them, loaded from planted_lmodel)."""
    return planted_lmodel.parent / "data", LandmarkModel.load(planted_lmodel)


@pytest.fixture
def annotation_dataset(small_png_cohort, tmp_path):
    """(a copy of small_png_cohort whose first subject lacks landmarks, the removed landmarks)."""
    return dataset_missing_one_subject(small_png_cohort, tmp_path / "data")


def local_client(app):
    """A test client that addresses the app as a browser on this machine does (Host 127.0.0.1:8000)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="session")
def screening_model(small_png_cohort, tmp_path_factory):
    """A frozen group-attention model (1 view, 5 epochs: seconds; with its novelty reference) trained on
    small_png_cohort, as `osteoscreen train` writes it: its directory. Tests read it; one that alters a model
    copies it first."""
    return built_once(tmp_path_factory, "screening-model",
                      lambda folder: train_model(small_png_cohort, folder / "model", TrainConfig(views=1, epochs=5)))


@pytest.fixture(scope="session")
def dicom_results(screening_model, small_dicom_cohort, tmp_path_factory):
    """`predict --dicom-out` of small_dicom_cohort by screening_model: the run folder."""
    from osteoscreen.cli import main

    def build(folder: Path) -> Path:
        assert main(["predict", str(screening_model), str(small_dicom_cohort), "--out", str(folder / "run"),
                     "--dicom-out"]) == 0
        return folder / "run"

    return built_once(tmp_path_factory, "dicom-results", build)


def read_report(source) -> dict:
    """Everything a screening SR says, read back with highdicom (source: a path or a pydicom Dataset)."""
    import highdicom as hd
    import pydicom

    dataset = pydicom.dcmread(source) if isinstance(source, str | Path) else source
    sr = hd.sr.Comprehensive3DSR.from_dataset(dataset)
    (image,) = sr.content.get_image_measurement_groups()
    regions = sr.content.get_planar_roi_measurement_groups()
    measured = {m.name.value: m.value for m in image.get_measurements()}
    evaluated = {q.name.value: q.value for q in image.get_qualitative_evaluations()}
    algorithm = {code: [item.TextValue for item in image[0].ContentSequence
                        if item.ConceptNameCodeSequence[0].CodeValue == code]
                 for code in ("111001", "111003", "111002")}
    return {
        "study_uid": sr.StudyInstanceUID, "patient_id": sr.PatientID, "verification": sr.VerificationFlag,
        "series_description": sr.SeriesDescription, "title": sr.content[0].ConceptNameCodeSequence[0].CodeValue,
        "p": float(measured["P-OSTEO"]), "threshold": float(measured["THRESHOLD"]),
        "decision": evaluated["64859006"].meaning, "task": evaluated["TASK"].value,
        "unlike": evaluated["UNLIKE"].meaning if "UNLIKE" in evaluated else None,
        "distance": float(measured["NOVELTY"]) if "NOVELTY" in measured else None,
        "landmarks": [g.finding_type.value.lower() for g in regions],
        "points": np.array([g.roi.value[0] for g in regions], dtype=np.float64),
        "graphic_types": {g.roi.graphic_type.value for g in regions},
        "tracking_uids": [str(g.tracking_uid) for g in regions], "image_tracking_uid": str(image.tracking_uid),
        "attention": [float(g.get_measurements()[0].value) for g in regions],
        "sites": [(g.finding_sites[0].value.meaning, g.finding_sites[0].laterality.meaning) for g in regions],
        "algorithm": (*algorithm["111001"], *algorithm["111003"], algorithm["111002"]),
        "library": [image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    for library in sr.content[0].ContentSequence if library.ConceptNameCodeSequence[0].CodeValue ==
                    "111028" for group in library.ContentSequence for image in group.ContentSequence
                    if image.ValueType == "IMAGE"],
        "equipment": [item.Manufacturer for item in sr.ContributingEquipmentSequence],
    }
