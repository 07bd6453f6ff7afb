"""Fit the phantom's free image parameters to the texture statistics of real PR patches (docs/phantom.md, "Realism").

Usage: .venv/bin/python scripts/phantom_calibrate.py [--realism ../shared/realism] [--seeds 1 2 3] [--subjects 20]
       .venv/bin/python scripts/phantom_calibrate.py --check 101 102 103   (no search: each seed's cohort alone)

Needs the realism kit (patch_stats.py and real_pr_patch_stats.json; only numbers, no images). Renders a
calibration cohorts in memory (seeds 1-3 by default, pooled; not the demo's seed 0), cuts its patches exactly as
`osteoscreen patches` does, and runs a coordinate search over the parameters below, minimising the squared
log-ratios to the real medians beyond 1.12x. Prints each improvement and the final values, to be copied into
data/phantom/synthesis.py, anatomy.py, bone.py and imaging_chain.py by hand (the search never edits the code).
"""

import argparse
import importlib.util
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import osteoscreen.data.phantom.anatomy as anatomy
import osteoscreen.data.phantom.bone as bone
import osteoscreen.data.phantom.imaging_chain as chain
import osteoscreen.data.phantom.synthesis as phantom
from osteoscreen.core.landmarks import GROUPS, LANDMARKS
from osteoscreen.data.dataset import Subject
from osteoscreen.data.patches import PatchConfig, to_uint8
from osteoscreen.data.subject_patches import cut_subject_patches
from osteoscreen.io.imageio import Radiograph

#: name: (module, attribute or a setter, lower bound, upper bound)
PARAMETERS = {
    "clutter": (phantom, "CLUTTER", 0.1, 0.35),
    "clutter_exponent": (anatomy, "CLUTTER_EXPONENT", 2.8, 3.8),
    "trabecular_contrast": (phantom, "TRABECULAR_CONTRAST", 0.04, 0.2),
    "skull_base": (anatomy, "SKULL_BASE", 0.0, 0.6),
    "cortex_elsewhere": (phantom, "CORTEX_ELSEWHERE", 0.41, 0.7),
    "projection_coarsening": (bone, "PROJECTION_COARSENING", 1.0, 2.0),
    "ring_width": (bone, "RING_WIDTH", 0.2, 0.7),
}


def _get(name: str) -> float:
    if name in PARAMETERS:
        module, attribute, *_ = PARAMETERS[name]
        return getattr(module, attribute)
    if name == "photons":
        return chain.PHOTONS[0] / 0.6
    if name == "detector_share":
        return float(np.mean(chain.DETECTOR_SHARE))
    if name == "mtf10":
        return float(np.mean(chain.MTF10_LP_MM))
    if name.startswith("period_"):
        return phantom.GROUP_PERIOD[name.removeprefix("period_")]
    return phantom.GROUP_CONTRAST[name.removeprefix("contrast_")]


def _set(name: str, value: float) -> None:
    if name in PARAMETERS:
        module, attribute, *_ = PARAMETERS[name]
        setattr(module, attribute, value)
    elif name == "photons":
        chain.PHOTONS = (value * 0.6, value * 1.6)
    elif name == "detector_share":
        chain.DETECTOR_SHARE = (max(value - 0.1, 0.01), min(value + 0.1, 0.99))
    elif name == "mtf10":
        chain.MTF10_LP_MM = (value - 0.5, value + 0.5)
    elif name.startswith("period_"):
        phantom.GROUP_PERIOD = {**phantom.GROUP_PERIOD, name.removeprefix("period_"): value}
    else:
        phantom.GROUP_CONTRAST = {**phantom.GROUP_CONTRAST, name.removeprefix("contrast_"): value}


BOUNDS = {name: (low, high) for name, (_, _, low, high) in PARAMETERS.items()} | {
    "photons": (800.0, 16000.0), "detector_share": (0.1, 0.7), "mtf10": (2.5, 4.5)} | {
    f"contrast_{g}": (0.2, 3.0) for g in GROUPS} | {f"period_{g}": (0.5, 1.5) for g in GROUPS}


def cohort_statistics(patch_statistics, seeds: list[int], subjects: int) -> dict[str, dict[str, float]]:
    """Per landmark group, the median of each statistic over the patches of the calibration cohorts (the first
    `subjects` subjects of each seed's default cohort, pooled)."""
    configs = [phantom.PhantomConfig(seed=seed) for seed in seeds]
    labels = [phantom.cohort_labels(config) for config in configs]

    def patches(job: tuple[int, int]) -> np.ndarray:
        which, index = job
        config = configs[which]
        rendered = phantom.render_subject(config, index, int(labels[which][index]))
        subject = Subject(rendered.subject_id, Path("-"), None, rendered.landmarks, rendered.spacing_mm)
        cut = cut_subject_patches(subject, Radiograph(rendered.pixels.astype(np.float32), rendered.spacing_mm),
                                  PatchConfig())
        return to_uint8(cut.plain_views(PatchConfig().context)) / 255.0

    with ThreadPoolExecutor() as pool:
        views = list(pool.map(patches, [(which, index) for which in range(len(seeds)) for index in range(subjects)]))
    rows = {group: [] for group in GROUPS}
    for subject in views:
        for name, view in zip(LANDMARKS, subject, strict=True):
            rows[name.rsplit("_", 1)[0]].append(patch_statistics(view))
    return {g: {key: float(np.median([r[key] for r in found])) for key in found[0]} for g, found in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realism", type=Path, default=Path("../shared/realism"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="calibration cohorts, pooled (default 1 2 3; never the demo's 0 nor a checking seed)")
    parser.add_argument("--subjects", type=int, default=20, help="subjects of each calibration cohort")
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--margin", type=float, default=1.12,
                        help="ratios to the real medians within this factor cost nothing (default 1.12)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="search these parameters only")
    parser.add_argument("--check", type=int, nargs="+", default=None, metavar="SEED",
                        help="no search: the statistics of these seeds' cohorts, each against the real medians")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("patch_stats", args.realism / "patch_stats.py")
    stats_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stats_module)
    real = json.loads((args.realism / "real_pr_patch_stats.json").read_text())["groups"]

    def ratios(seeds: list[int]) -> dict[str, float]:
        """group.statistic -> the cohorts' median over the real median."""
        mine = cohort_statistics(stats_module.patch_statistics, seeds, args.subjects)
        return {f"{g}.{k}": mine[g][k] / real[g][k] for g in GROUPS for k in real[g] if k != "n"}

    def score(found: dict[str, float]) -> tuple[float, int]:
        """(the loss, how many statistics lie within 1.25x)."""
        logs = [abs(math.log(r)) for r in found.values()]
        return sum(max(0.0, r - math.log(args.margin)) ** 2 for r in logs), sum(r <= math.log(1.25) for r in logs)

    def loss() -> tuple[float, int]:
        return score(ratios(args.seeds))

    if args.check:
        for seed in args.check:
            found = ratios([seed])
            far = sorted(found, key=lambda key: -abs(math.log(found[key])))[:6]
            value, count = score(found)
            print(f"seed {seed}: loss {value:.4f}, {count}/44 within 1.25x; furthest "
                  + ", ".join(f"{key} x{found[key]:.2f}" for key in far), flush=True)
        return

    best, within = loss()
    print(f"start: loss {best:.4f}, {within}/44 within 1.25x", flush=True)
    step = 0.15
    for sweep in range(args.sweeps):
        for name, (low, high) in BOUNDS.items():
            if args.only and name not in args.only:
                continue
            current = _get(name)
            for direction in (1, -1):
                trial = float(np.clip(current * (1 + direction * step), low, high))
                if trial == current:
                    continue
                _set(name, trial)
                value, count = loss()
                if value < best:
                    best, within = value, count
                    print(f"sweep {sweep}: {name} = {trial:.4g}: loss {value:.4f}, {count}/44", flush=True)
                    break
                _set(name, current)
        step *= 0.6
    print(json.dumps({name: round(_get(name), 4) for name in BOUNDS}, indent=1))


if __name__ == "__main__":
    main()
