"""The shared vocabulary: the 8 landmark names, their 4 left/right groups, the class names, the default decision
threshold, and the tasks (the binary question a run or a model answers, from the three WHO classes):

- `osteoporosis-vs-normal` (default, the paper's): osteoporosis positive, normal negative, osteopenia excluded;
- `osteoporosis-vs-rest`: osteoporosis positive, osteopenia and normal negative;
- `low-bmd-vs-normal`: osteopenia and osteoporosis positive, normal negative.

Patient's right/left. On a panoramic radiograph the patient's right is on the image's left.
"""

import numpy as np

from osteoscreen.core.errors import InputError

GROUPS: tuple[str, ...] = ("condyle", "angle", "premolar", "tuberosity")
SIDES: tuple[str, ...] = ("right", "left")

#: The 8 landmarks in model order: group-major, right before left.
LANDMARKS: tuple[str, ...] = tuple(f"{group}_{side}" for group in GROUPS for side in SIDES)

#: For landmark index i (in LANDMARKS order), the index of its group in GROUPS.
GROUP_OF_LANDMARK: tuple[int, ...] = tuple(i // len(SIDES) for i in range(len(LANDMARKS)))


def sides_swapped(points: np.ndarray) -> list[str]:
    """The groups whose `_right` landmark lies right of (at a larger x than) its `_left` twin in points [8, 2]
    (x, y) px, LANDMARKS order. A landmark's side is the patient's, and a PR shown facing the patient has the
    patient's right on the image's left, so these pairs are named the viewer's way round, or the image is stored
    mirrored. Pairs with an unplaced (NaN) point are skipped."""
    x = np.asarray(points, dtype=np.float64)[:, 0]
    return [group for group, right, left in zip(GROUPS, x[0::2], x[1::2], strict=True) if right > left]


POSITIVE = "osteoporosis"
NEGATIVE = "normal"
#: Class index 1 is the positive class everywhere.
CLASSES: tuple[str, ...] = (NEGATIVE, POSITIVE)
#: p(osteoporosis) at or above which a subject is flagged, unless a fitted decision rule says otherwise.
THRESHOLD = 0.5


def flagged(probability, threshold: float = THRESHOLD, what: str = "p(osteoporosis)") -> np.ndarray:
    """[n] bool (or a 0-d bool for a scalar): probability >= threshold, the decision for the positive class. Every
    decision goes through here: a probability or threshold that is not a finite number is refused (InputError naming
    `what`), because a NaN compares False and would otherwise be decided "normal"."""
    p = np.asarray(probability, dtype=np.float64)
    bad = ~np.isfinite(p)
    if bad.any() or not np.isfinite(threshold):
        value = p[bad].flat[0] if bad.any() else threshold
        where = f" ({int(bad.sum())} of {p.size})" if p.ndim and bad.any() else ""
        raise InputError(f"{what} is {value} (not a finite number){where}: no decision is made; the input image, "
                         "an argument or the model holds non-finite values")
    return p >= threshold


def decision(probability: float, threshold: float = THRESHOLD, what: str = "p(osteoporosis)") -> str:
    """The class name decided for one probability (flagged)."""
    return CLASSES[int(flagged(probability, threshold, what))]


#: The three WHO classes of bone mineral density, by DXA T-score (WHO 1994): normal T >= -1, osteopenia
#: -2.5 < T < -1, osteoporosis T <= -2.5. A task (TASKS, below) maps them to the binary CLASSES.
WHO_CLASSES: tuple[str, ...] = ("normal", "osteopenia", "osteoporosis")


def who_index(label: str) -> int:
    """Map 'normal'/'osteopenia'/'osteoporosis' (any case, surrounding spaces ignored) to 0/1/2; ValueError
    otherwise."""
    key = label.strip().lower()
    if key not in WHO_CLASSES:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(WHO_CLASSES)}")
    return WHO_CLASSES.index(key)


def who_from_t_score(t_score: float) -> int:
    """The WHO class index of a T-score."""
    return 0 if t_score >= -1.0 else 2 if t_score <= -2.5 else 1


#: task -> (WHO class indices counted positive, counted negative); the others are excluded.
TASKS: dict[str, tuple[frozenset[int], frozenset[int]]] = {
    "osteoporosis-vs-normal": (frozenset({2}), frozenset({0})),
    "osteoporosis-vs-rest": (frozenset({2}), frozenset({0, 1})),
    "low-bmd-vs-normal": (frozenset({1, 2}), frozenset({0})),
}
DEFAULT_TASK = "osteoporosis-vs-normal"


def check_task(task: str) -> str:
    if task not in TASKS:
        raise InputError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    return task


def binary_label(who: int | None, task: str) -> int | None:
    """1 (positive), 0 (negative) or None (unlabelled, or a class the task excludes) for a WHO class index."""
    if who is None:
        return None
    positive, negative = TASKS[check_task(task)]
    return 1 if who in positive else 0 if who in negative else None
