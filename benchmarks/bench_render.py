"""Augmented batch rendering on the CPU: the batched renderer against the former one, for the same draws.

A training step renders 32 subjects' 8 augmented patches. Former: `render_views` subject by subject (one
affine_grid + grid_sample per subject, each subject's crops converted from numpy). Ours: `Cohort.render`, the
whole batch in one resampling from crops held as one tensor (on a GPU: uploaded there once). Target: the CPU
path no slower (ratio >= 0.95: equal times differ by a few per cent between runs here), at the paper's 224 px
and at native resolution (100 px). On the CPU the batch is resampled 4 subjects per call (one call for all 32
at 224 px runs out of cache and took twice as long); on a GPU in one call.
"""

from __future__ import annotations

import numpy as np
import torch

from common import REPEATS, Row, default_cohort, median_seconds
from osteoscreen.data.cohort import Cohort
from osteoscreen.data.patches import PatchConfig, random_augmentation, render_views
from osteoscreen.data.subject_patches import load_dataset_with_patches

BATCH = 32
NO_SLOWER = 0.95  # "no slower", allowing the few per cent by which medians on this shared VM move between runs


def former_render(cohort: Cohort, indices, size: int, generator: torch.Generator) -> torch.Tensor:
    views = []
    for index in indices:
        stretch, flip = random_augmentation(8, cohort.patch_config, generator)
        views.append(render_views(torch.from_numpy(cohort.patches[index].crops), cohort.patch_config.context, size,
                                  stretch, flip))
    return torch.stack(views).unsqueeze(2)


def run() -> list[Row]:
    _, patches = load_dataset_with_patches(default_cohort(), PatchConfig())
    cohort = Cohort(patches, PatchConfig())
    indices = np.arange(BATCH) % len(cohort)
    rows = []
    for size in (224, 100):
        torch.testing.assert_close(cohort.render(indices, size, torch.Generator().manual_seed(1)),
                                   former_render(cohort, indices, size, torch.Generator().manual_seed(1)),
                                   rtol=0, atol=1e-6)
        ours = median_seconds(lambda size=size: cohort.render(indices, size, torch.Generator().manual_seed(1)))
        former = median_seconds(lambda size=size: former_render(cohort, indices, size,
                                                                torch.Generator().manual_seed(1)))
        rows.append(Row(f"augmented batch render, {BATCH} subjects x 8 patches @{size}, CPU (ms; median of {REPEATS})",
                        f"{ours * 1e3:.1f}", f"{former * 1e3:.1f} (subject by subject)", f"{former / ours:.2f}x",
                        f">= {NO_SLOWER}x", former / ours >= NO_SLOWER))
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
