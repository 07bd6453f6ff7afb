"""The landmark suggester: views and flips, a planted cohort whose landmarks are known, confidence and flags, the
model file, the commands and bad input."""

from __future__ import annotations

import csv
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from conftest import SIZE, SMALL, TEMPLATE, planted_image, write_planted
from osteoscreen.cli import main
from osteoscreen.core.errors import InputError, InputWarning
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.data.dataset import load_dataset
from osteoscreen.landmarking.evaluation import evaluate_landmarks
from osteoscreen.landmarking.geometry import (
    SWAP,
    WorkingImage,
    about,
    sample,
    to_image,
    to_view,
    whole_view,
)
from osteoscreen.landmarking.model import LandmarkConfig, LandmarkModel


def test_views_map_points_both_ways_and_a_flip_swaps_the_sides():
    points = TEMPLATE * [800, 400] + 3.0
    plain = whole_view((400, 800), (96, 192))
    for matrix in (plain, plain @ about((96, 48), 1.1, 5.0, flip=True)):
        assert np.allclose(to_image(matrix, to_view(matrix, points)), points)
    pixels, _ = planted_image(np.random.default_rng(1))
    image, mirrored_image = (WorkingImage.from_pixels(p, 0.1) for p in (pixels, pixels[:, ::-1].copy()))
    plain = whole_view(image.shape, (96, 192))
    flipped = plain @ about((96, 48), flip=True)
    # a flipped view of the radiograph is the plain view of the mirrored radiograph ...
    assert torch.allclose(sample(image.level, image.shape, flipped[None], (96, 192)),
                          sample(mirrored_image.level, image.shape, plain[None], (96, 192)), atol=1e-5)
    # ... whose landmarks are the mirrored points with right and left swapped (what training targets use)
    mirrored_points = np.stack([800 - 1 - points[:, 0], points[:, 1]], axis=1)[list(SWAP)]
    assert np.allclose(to_view(flipped, points)[list(SWAP)], to_view(plain, mirrored_points))
    assert tuple(SWAP) == (1, 0, 3, 2, 5, 4, 7, 6)


def test_a_planted_cohort_is_learnt_and_held_out_radiographs_are_placed_confidently(planted):
    _, model = planted
    rng = np.random.default_rng(99)
    errors, confidence = [], []
    for _ in range(4):
        pixels, points = planted_image(rng)
        suggestion = model.suggest(pixels, spacing_mm=0.1)
        errors.append(np.hypot(*(suggestion.points - points).T))
        confidence.append(suggestion.confidence)
    errors = np.array(errors)
    assert np.median(errors) < 8.0, errors.round(1)  # px; blobs are 9 px wide, the template jitters by 12 px
    assert np.median(confidence) > 0.3


def test_a_mirrored_radiograph_gets_the_mirrored_landmarks_with_the_sides_swapped(planted):
    _, model = planted
    pixels, _ = planted_image(np.random.default_rng(5))
    direct = model.suggest(pixels, spacing_mm=0.1)
    mirrored = model.suggest(pixels[:, ::-1].copy(), spacing_mm=0.1)
    back = mirrored.points[list(SWAP)].copy()
    back[:, 0] = SIZE[1] - 1 - back[:, 0]
    assert np.hypot(*(back - direct.points).T).max() < 10.0


def test_an_image_with_nothing_to_find_is_flagged_everywhere_not_placed_confidently(planted):
    _, model = planted
    flat = 0.2 + 0.03 * np.random.default_rng(3).standard_normal(SIZE)
    suggestion = model.suggest(np.clip(flat, 0, 1), spacing_mm=0.1)
    assert suggestion.flagged.sum() >= 6, suggestion.reasons
    assert all("unsure" in r or "place" in r or "disagree" in r for r in suggestion.reasons if r)


def test_a_jaw_cut_off_by_the_frame_is_flagged(planted):
    _, model = planted
    pixels, _ = planted_image(np.random.default_rng(6))
    cut = pixels[:, 100:]  # the image's left (the patient's right condyle at x = 120) nearly out of frame
    padded = np.concatenate([cut, np.full((SIZE[0], 100), 0.2)], axis=1)
    suggestion = model.suggest(padded[:, :700], spacing_mm=0.1)
    assert suggestion.flagged[LANDMARKS.index("condyle_right")]


def test_bad_images_are_refused_or_warned(planted):
    _, model = planted
    with pytest.raises(InputError, match="too small"):
        model.suggest(np.zeros((100, 200)))
    ceph = np.clip(0.2 + 0.03 * np.random.default_rng(0).standard_normal((800, 900)), 0, 1)
    with pytest.warns(InputWarning, match="unlike a panoramic radiograph"):
        suggestion = model.suggest(ceph)
    assert suggestion.flagged.all()
    with pytest.raises(InputError):
        model.suggest(np.full(SIZE, np.nan))


def test_the_model_file_round_trips_and_refuses_tampering(planted, tmp_path):
    root, model = planted
    folder = model.save(tmp_path / "lmodel")
    loaded = LandmarkModel.load(folder)
    pixels, _ = planted_image(np.random.default_rng(7))
    assert np.array_equal(loaded.suggest(pixels).points, model.suggest(pixels).points)
    info = json.loads((folder / "landmark-model.json").read_text())
    info["config"]["epochs"] = 1
    (folder / "landmark-model.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="tampering"):
        LandmarkModel.load(folder)
    with pytest.raises(InputError, match="not found"):
        LandmarkModel.load(tmp_path)
    with pytest.raises(InputError, match="already exists"):
        model.save(folder)


def test_commands_train_suggest_evaluate_and_predict_with_suggested_landmarks(planted, tmp_path, capsys):
    root, _ = planted
    fast = ["--epochs", "2"]
    assert main(["landmarks", "train", str(root), "--out", str(tmp_path / "lmodel"), *fast]) == 0
    out = tmp_path / "suggested.csv"
    assert main(["landmarks", "suggest", str(tmp_path / "lmodel"), str(root / "images"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 * 8 and {"confidence", "flagged", "reason"} <= set(rows[0])
    # an ordinary landmarks.csv: a dataset made of it loads
    copy = tmp_path / "copy"
    shutil.copytree(root / "images", copy / "images")
    (copy / "subjects.csv").write_text((root / "subjects.csv").read_text())
    (copy / "landmarks.csv").write_text(out.read_text())
    assert len(load_dataset(copy, require_labels=False).subjects) == 12
    assert main(["landmarks", "evaluate", str(root), "--out", str(tmp_path / "eval"), "--folds", "2", *fast]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["unit"] == "mm" and metrics["n"] == 12 and set(metrics["landmarks"]) == set(LANDMARKS)
    assert "sdr_4mm" in metrics["overall"] and "<img" in (tmp_path / "eval" / "report.html").read_text()
    assert "MRE mm" in capsys.readouterr().out


def test_predict_screens_a_radiograph_without_landmarks_from_suggested_ones(planted, screening_model, tmp_path):
    root, model = planted
    lmodel = model.save(tmp_path / "lmodel")
    image = root / "images" / "S0.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        assert main(["predict", str(screening_model), str(image), "--suggest", str(lmodel), "--out",
                     str(tmp_path / "p")]) == 0
    row = next(csv.DictReader(open(tmp_path / "p" / "predictions.csv")))
    assert row["landmarks"] == "suggested" and 0 <= float(row["landmark_confidence_min"]) <= 1
    record = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert record["landmark_model"]["path"] == str(lmodel)
    assert [r["landmark"] for r in record["suggested_landmarks"]["S0"]] == list(LANDMARKS)
    assert main(["predict", str(screening_model), str(image), "--out", str(tmp_path / "q")]) == 2  # neither given


def test_a_trained_model_is_evaluated_on_unseen_data_and_a_learning_curve_subsamples_each_fold(planted, tmp_path,
                                                                                             capsys):
    root, model = planted
    lmodel = model.save(tmp_path / "lmodel")
    assert main(["landmarks", "evaluate", str(root), "--lmodel", str(lmodel), "--out", str(tmp_path / "x")]) == 2
    assert "the dataset the landmark model was trained on" in capsys.readouterr().err  # training error, refused
    unseen = write_planted(tmp_path / "unseen", 6, seed=11)
    assert main(["landmarks", "evaluate", str(unseen), "--lmodel", str(lmodel), "--out", str(tmp_path / "held")]) == 0
    metrics = json.loads((tmp_path / "held" / "metrics.json").read_text())
    assert metrics["protocol"] == "held-out" and metrics["n"] == 6 and metrics["config"]["landmark_model"]["n"] == 12
    errors = list(csv.DictReader(open(tmp_path / "held" / "errors.csv")))
    first = model.suggest(unseen / "images" / "S0.png")
    assert [float(r["x_suggested"]) for r in errors[:8]] == pytest.approx(first.points[:, 0], abs=0.05)
    assert "never saw" in (tmp_path / "held" / "report.html").read_text()

    curve = evaluate_landmarks(root, 3, LandmarkConfig(view=(96, 192), epochs=1, batch=2), train_size=3)
    assert curve.config["train_size"] == 3 and curve.config["protocol"] == "k-fold" and curve.folds.max() == 2
    with pytest.raises(InputError, match="train_size"):
        evaluate_landmarks(root, 3, SMALL, train_size=9)  # a 3-fold split of 12 trains on 8
    for ignored in (["--train-size", "3"], ["--epochs", "7"], ["--folds", "3"]):  # cross-validation's own options
        assert main(["landmarks", "evaluate", str(unseen), "--lmodel", str(lmodel), *ignored,
                     "--out", str(tmp_path / "y")]) == 2
        assert ignored[0] in capsys.readouterr().err and not (tmp_path / "y").exists()
