"""Clinical covariates beside the image: a subject's age and sex as model input.

Matrix layout [N, 3]: age in years, female (0/1), male (0/1): sex one-hot, so that neither sex is a reference
level a model could confuse with a missing value. A row is NaN where the subject lacks age or sex.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from osteoscreen.data.subject_patches import SubjectPatches

COVARIATE_NAMES = ("age", "female", "male")  # the model inputs
COVARIATES_NEEDED = ("age", "sex")  # the subjects.csv columns (and web page fields) they come from


def covariate_matrix(patches: Sequence[SubjectPatches]) -> np.ndarray:
    """[N, 3] float64 (age, female, male) per subject; a row of NaN where age or sex is missing."""
    rows = [[p.age, float(p.sex == "F"), float(p.sex == "M")] if p.age is not None and p.sex is not None
            else [np.nan] * len(COVARIATE_NAMES) for p in patches]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(COVARIATE_NAMES))
