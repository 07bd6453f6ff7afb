"""The cohort: subjects ready for every method, loaded from a dataset directory with each radiograph decoded once.

A `Cohort` holds every subject's 8 context crops in memory (`SubjectPatches`), its binary label for the task and
its clinical covariates, and a memo that features computed from it (frozen backbone features, LBP histograms,
crops uploaded to a device) are kept in, so every fold and method computes them once.

Indexing a cohort with positions (an integer array, a slice or a boolean mask) gives a view of those subjects that
shares the memo: scikit-learn's `cross_val_predict` and `train_test_split` cut a cohort as they would cut an
array, and the estimators (osteoscreen.methods.estimators) fit on `view.root` at `view.positions`.

Covariate layout [N, 3]: age in years, female (0/1), male (0/1): sex one-hot, so that neither sex is a reference
level a model could confuse with a missing value; a row is NaN where the subject lacks age or sex.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from osteoscreen.core.arguments import check_type
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import DEFAULT_TASK, LANDMARKS
from osteoscreen.core.utils import thread_map
from osteoscreen.data.dataset import Dataset
from osteoscreen.data.patches import PatchConfig, random_augmentation, render_views
from osteoscreen.data.subject_patches import (
    SubjectPatches,
    load_dataset_with_patches,
    load_subject_patches,
    select_task,
)

COVARIATE_NAMES = ("age", "female", "male")  # the model inputs
COVARIATES_NEEDED = ("age", "sex")  # the subjects.csv columns (and web page fields) they come from
CPU_RENDER_SUBJECTS = 4  # subjects per resampling call on the CPU (measured: see Cohort.render)


def covariate_matrix(patches: Sequence[SubjectPatches]) -> np.ndarray:
    """[N, 3] float64 (age, female, male) per subject; a row of NaN where age or sex is missing."""
    rows = [[p.age, float(p.sex == "F"), float(p.sex == "M")] if p.age is not None and p.sex is not None
            else [np.nan] * len(COVARIATE_NAMES) for p in patches]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(COVARIATE_NAMES))


class Cohort:
    """Subjects prepared for training and prediction.

    patches: one SubjectPatches per subject; patch_config: how they were cut; data_hash: identifies the data (the
    on-disk feature cache in cache_dir is keyed by it); info: what runs and models record of the data
    (Dataset.summary plus the task; `Cohort.load` fills it).
    """

    def __init__(self, patches: Sequence[SubjectPatches], patch_config: PatchConfig, data_hash: str | None = None,
                 cache_dir: Path | None = None, info: dict | None = None):
        self.patches = list(patches)
        self.patch_config = patch_config
        self.data_hash = data_hash
        self.cache_dir = cache_dir
        self.info = info or {}
        self.root = self
        self.positions = np.arange(len(self.patches))
        self.memo: dict = {}  # features computed from this cohort (osteoscreen.features.frozen), shared by its views

    @classmethod
    def load(cls, path: str | Path, patch: PatchConfig | None = None, task: str = DEFAULT_TASK,
             cache_dir: str | Path | None = None, allow_shared_images: bool = True, progress: Callable = iter
             ) -> Cohort:
        """A dataset directory (README "Dataset layout") validated and cut into patches, each radiograph decoded
        once, keeping the subjects `task` uses (landmarks.TASKS) labelled for it. cache_dir: where frozen features
        are cached on disk (default: memory only); allow_shared_images=False refuses two subjects sharing a file."""
        check_type(path, (str, Path), "path", "a dataset directory")
        check_type(patch, (PatchConfig, type(None)), "patch", "a PatchConfig, or None for the defaults")
        check_type(cache_dir, (str, Path, type(None)), "cache_dir")
        patch = patch or PatchConfig()
        dataset, patches = load_dataset_with_patches(path, patch, progress, allow_shared_images=allow_shared_images)
        patches, info = select_task(dataset, patches, task)
        return cls(patches, patch, info["hash"], None if cache_dir is None else Path(cache_dir), info)

    @classmethod
    def from_dataset(cls, dataset: Dataset, patch: PatchConfig) -> Cohort:
        """Every subject's crops of an already validated dataset (each radiograph read again, on threads)."""
        return cls(thread_map(lambda subject: load_subject_patches(subject, patch), dataset.subjects), patch)

    # -- a cohort as scikit-learn sees its X: a sequence of subjects that can be indexed by positions --

    def __len__(self) -> int:
        return len(self.patches)

    @property
    def shape(self) -> tuple[int]:
        return (len(self.patches),)

    def __getitem__(self, index) -> Cohort:
        """The view of the subjects at `index` (positions in this cohort: an integer array, a slice or a mask)."""
        chosen = np.arange(len(self))[index]
        if np.ndim(chosen) != 1:
            raise InputError("a cohort is indexed by positions (an integer array, a slice or a boolean mask)")
        view = object.__new__(Cohort)
        view.__dict__.update(self.__dict__)
        view.positions = self.positions[chosen]
        view.patches = [self.root.patches[i] for i in view.positions]
        return view

    def relabelled(self, labels: np.ndarray) -> Cohort:
        """This cohort with other binary labels (scikit-learn's y) for its subjects: a view of a copy of its root
        that shares the memo (labels do not change features)."""
        labels = np.asarray(labels)
        if labels.shape != (len(self),) or not set(np.unique(labels)) <= {0, 1}:
            raise InputError(f"y: expected {len(self)} labels of 0 (normal) or 1 (osteoporosis)")
        patches = list(self.root.patches)
        for position, label in zip(self.positions, labels, strict=True):
            patches[position] = replace(patches[position], label=int(label))
        root = Cohort(patches, self.patch_config, self.data_hash, self.cache_dir, self.info)
        root.memo = self.root.memo
        return root[self.positions]

    def detached(self) -> Cohort:
        """A root cohort of this view's subjects, in its order (features are computed afresh for it)."""
        return Cohort(self.patches, self.patch_config, None, None, self.info)

    def summary(self) -> dict:
        """What runs and models record of these subjects: the dataset's record (`info`: path, hash, task, ...) with
        the class counts of these subjects (a view's, not its dataset's)."""
        labels = self.labels
        return {**self.info, "n": len(labels), "positives": int(labels.sum()),
                "negatives": int(len(labels) - labels.sum())}

    def __getstate__(self) -> dict:
        """Pickled for worker processes without the device copies (each process uploads its own)."""
        return {**self.__dict__, "memo": {k: v for k, v in self.memo.items() if not k.startswith("device:")}}

    @property
    def subject_ids(self) -> list[str]:
        return [p.subject_id for p in self.patches]

    @property
    def labels(self) -> np.ndarray:
        """[N] int64 binary labels of the task (1 = positive); refused when a subject has none."""
        if any(p.label is None for p in self.patches):
            raise InputError("some subjects of this cohort have no label")
        return np.array([p.label for p in self.patches], dtype=np.int64)

    @property
    def covariates(self) -> np.ndarray:
        """[N, 3] age, female, male per subject (covariate_matrix; NaN rows where missing)."""
        return covariate_matrix(self.patches)

    @property
    def padded_patches(self) -> int:
        return sum(p.padded for p in self.patches)

    def plain_views(self, index: int, out_size: int | None = None) -> np.ndarray:
        """[8, out, out] float32 un-augmented patches of one subject (native size when out_size is None)."""
        return self.patches[index].plain_views(self.patch_config.context, out_size)

    def render(self, indices: Sequence[int], out_size: int, generator: torch.Generator | None = None,
               device: str | torch.device = "cpu") -> torch.Tensor:
        """[b, 8, 1, out, out] float32 patches of the given subjects, on `device`: plain, or augmented when a
        generator is given.

        The augmentation is drawn on the CPU from the generator, subject by subject in the order given (so a
        seed gives the same draws on every device), and the batch is resampled from crops uploaded to the device
        once (`device_crops`): on a GPU in one call, on the CPU CPU_RENDER_SUBJECTS subjects per call (one call for
        32 subjects at 224 px, 51 MB of output, runs out of cache: 153 ms against 68 ms in calls of 4). Per subject
        this equals `render_views` of that subject alone.
        """
        if self.root is not self:
            return self.root.render(self.positions[np.asarray(indices, dtype=np.int64)], out_size, generator, device)
        count = len(LANDMARKS)
        stretch = flip = None
        if generator is not None:
            draws = [random_augmentation(count, self.patch_config, generator) for _ in indices]
            stretch, flip = torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])
        stacks, where = self.device_crops(device)
        out = torch.empty(len(indices), count, out_size, out_size, device=device)
        by_size: dict[int, list[tuple[int, int]]] = {}
        for position, index in enumerate(indices):
            size, row = where[index]
            by_size.setdefault(size, []).append((position, row))
        for size, group in by_size.items():
            per_call = len(group) if torch.device(device).type == "cuda" else CPU_RENDER_SUBJECTS
            for start in range(0, len(group), per_call):
                items = group[start:start + per_call]
                positions = torch.tensor([p for p, _ in items])
                rows = torch.tensor([r for _, r in items], device=stacks[size].device)
                patches = (positions[:, None] * count + torch.arange(count)).flatten()
                views = render_views(stacks[size].index_select(0, rows).flatten(0, 1), self.patch_config.context,
                                     out_size, None if stretch is None else stretch[patches],
                                     None if flip is None else flip[patches])
                out[positions.to(out.device)] = views.view(len(items), count, out_size, out_size)
        return out.unsqueeze(2)

    def device_crops(self, device: str | torch.device) -> tuple[dict[int, torch.Tensor], list[tuple[int, int]]]:
        """Every subject's context crops on `device`, uploaded on first use: ({crop side S: [n_S, 8, S, S]},
        [(S, row) per subject]). Subjects share one stack when their crops have the same side (always, unless
        --patch-mm meets differing pixel spacings)."""
        key = f"device:{torch.device(device)}"
        if key not in self.memo:
            where, members = [], {}
            for subject in self.patches:
                rows = members.setdefault(subject.crops.shape[-1], [])
                where.append((subject.crops.shape[-1], len(rows)))
                rows.append(subject.crops)
            stacks = {size: torch.from_numpy(np.stack(rows)).to(device) for size, rows in members.items()}
            self.memo[key] = (stacks, where)
        return self.memo[key]
