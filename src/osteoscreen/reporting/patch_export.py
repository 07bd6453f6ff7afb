"""`osteoscreen patches`: write every subject's 8 patches, a montage per subject and a cohort overview."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from osteoscreen.core.landmarks import LANDMARKS, WHO_CLASSES
from osteoscreen.data.dataset import Dataset
from osteoscreen.data.patches import PatchConfig, to_uint8
from osteoscreen.data.subject_patches import load_dataset_with_patches
from osteoscreen.io.outputs import INDEX_FILE, output_folder, subject_file_names, write_index
from osteoscreen.reporting.visualise import cohort_overview, subject_montage

OVERVIEW_THUMB = 64
OVERVIEW_FILE = "overview.png"


@dataclass
class ExportSummary:
    dataset: Dataset
    padded_patches: int
    overview: Path


def export_patches(data_dir: str | Path, out: str | Path, config: PatchConfig, progress=iter) -> ExportSummary:
    """Check the whole dataset (every image decoded once), then write, whole or not at all,
    out/patches/<name>/<landmark>.png (8-bit, native size), out/montages/<name>.png, out/overview.png and
    out/index.csv (subject_id -> <name>, see `subject_file_names`). An earlier `patches` output is replaced."""
    out = Path(out)
    with output_folder(out, replaces=INDEX_FILE) as folder:
        dataset, cut = load_dataset_with_patches(data_dir, config, progress)
        ids = [subject.subject_id for subject in dataset.subjects]
        names = subject_file_names(ids)
        (folder / "patches").mkdir()
        (folder / "montages").mkdir()
        rows = []
        for subject, patches, name in zip(dataset.subjects, cut, names, strict=True):
            plain = patches.plain_views(config.context)
            subject_dir = folder / "patches" / name
            subject_dir.mkdir()
            for landmark, patch in zip(LANDMARKS, to_uint8(plain), strict=True):
                Image.fromarray(patch).save(subject_dir / f"{landmark}.png")
            class_name = "unlabelled" if subject.who is None else WHO_CLASSES[subject.who]
            title = f"{subject.subject_id} — {class_name} — {patches.side} px patches"
            subject_montage(plain, title, class_name).save(folder / "montages" / f"{name}.png")
            rows.append((subject.subject_id, class_name, patches.plain_views(config.context, OVERVIEW_THUMB)))
        Image.fromarray(cohort_overview(rows, OVERVIEW_THUMB)).save(folder / OVERVIEW_FILE)
        write_index(folder, ids, names)
    return ExportSummary(dataset, sum(p.padded for p in cut), out / OVERVIEW_FILE)
