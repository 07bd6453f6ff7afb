"""`osteoscreen patches`: write every subject's 8 patches, a montage per subject and a cohort overview."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from osteoscreen.data.dataset import Dataset
from osteoscreen.data.patches import PatchConfig, to_uint8
from osteoscreen.data.subject_patches import load_subject_patches
from osteoscreen.landmarks import CLASSES, LANDMARKS
from osteoscreen.visualise import cohort_overview, save_figure, subject_montage

OVERVIEW_THUMB = 64


@dataclass
class ExportSummary:
    subjects: int
    padded_patches: int
    overview: Path


def export_patches(dataset: Dataset, out: str | Path, config: PatchConfig, progress=iter) -> ExportSummary:
    """out/patches/<subject>/<landmark>.png (8-bit, native size), out/montages/<subject>.png, out/overview.png."""
    out = Path(out)
    (out / "patches").mkdir(parents=True, exist_ok=True)
    (out / "montages").mkdir(parents=True, exist_ok=True)
    rows, padded = [], 0
    for subject in progress(dataset.subjects):
        patches = load_subject_patches(subject, config)
        padded += patches.padded
        plain = patches.plain_views(config.context)
        subject_dir = out / "patches" / subject.subject_id
        subject_dir.mkdir(exist_ok=True)
        for name, patch in zip(LANDMARKS, to_uint8(plain), strict=True):
            Image.fromarray(patch).save(subject_dir / f"{name}.png")
        class_name = "unlabelled" if subject.label is None else CLASSES[subject.label]
        title = f"{subject.subject_id} — {class_name} — {patches.side} px patches"
        save_figure(subject_montage(plain, title, class_name), out / "montages" / f"{subject.subject_id}.png")
        rows.append((subject.subject_id, class_name, patches.plain_views(config.context, OVERVIEW_THUMB)))
    overview = out / "overview.png"
    Image.fromarray(cohort_overview(rows, OVERVIEW_THUMB)).save(overview)
    return ExportSummary(len(rows), padded, overview)
