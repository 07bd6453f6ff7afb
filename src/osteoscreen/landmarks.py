"""The shared vocabulary: the 8 landmark names, their 4 left/right groups and the class names.

Patient's right/left. On a panoramic radiograph the patient's right is on the image's left.
"""

GROUPS: tuple[str, ...] = ("condyle", "angle", "premolar", "tuberosity")
SIDES: tuple[str, ...] = ("right", "left")

#: The 8 landmarks in model order: group-major, right before left.
LANDMARKS: tuple[str, ...] = tuple(f"{group}_{side}" for group in GROUPS for side in SIDES)

#: For landmark index i (in LANDMARKS order), the index of its group in GROUPS.
GROUP_OF_LANDMARK: tuple[int, ...] = tuple(i // len(SIDES) for i in range(len(LANDMARKS)))

POSITIVE = "osteoporosis"
NEGATIVE = "normal"
#: Class index 1 is the positive class everywhere.
CLASSES: tuple[str, ...] = (NEGATIVE, POSITIVE)


#: The three WHO classes of bone mineral density, by DXA T-score (WHO 1994): normal T >= -1, osteopenia
#: -2.5 < T < -1, osteoporosis T <= -2.5. A task (osteoscreen.tasks) maps them to the binary CLASSES.
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

