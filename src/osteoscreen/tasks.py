"""The binary question a run or a model answers, from the three WHO classes (landmarks.WHO_CLASSES).

- `osteoporosis-vs-normal` (default, the paper's): osteoporosis positive, normal negative, osteopenia excluded;
- `osteoporosis-vs-rest`: osteoporosis positive, osteopenia and normal negative;
- `low-bmd-vs-normal`: osteopenia and osteoporosis positive, normal negative.
"""

from __future__ import annotations

from osteoscreen.errors import InputError

#: task -> (WHO class indices counted positive, counted negative); the others are excluded.
TASKS: dict[str, tuple[frozenset[int], frozenset[int]]] = {
    "osteoporosis-vs-normal": (frozenset({2}), frozenset({0})),
    "osteoporosis-vs-rest": (frozenset({2}), frozenset({0, 1})),
    "low-bmd-vs-normal": (frozenset({1, 2}), frozenset({0})),
}
DEFAULT_TASK = "osteoporosis-vs-normal"


def check_task(task: str) -> str:
    if task not in TASKS:
        raise InputError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    return task


def binary_label(who: int | None, task: str) -> int | None:
    """1 (positive), 0 (negative) or None (unlabelled, or a class the task excludes) for a WHO class index."""
    if who is None:
        return None
    positive, negative = TASKS[check_task(task)]
    return 1 if who in positive else 0 if who in negative else None
