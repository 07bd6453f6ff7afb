"""The paper's texture baselines and the clinical one, as scikit-learn pipelines on feature matrices.

Features: the LBP histograms of the 8 patches (`features.lbp_features`) for the texture baselines; age and sex
(`Cohort.covariates`) for `clinical`. Classifiers (the scaler is fitted inside each training fold by the Pipeline):
- `knn-lbp`: StandardScaler + k-nearest neighbours (k = 5, a fixed choice; fewer on tiny training sets);
- `ensemble-lbp`: a random forest of 300 trees, i.e. bagged decision trees with random feature subsets, the
  closest scikit-learn counterpart of MATLAB's bagged-tree ensemble that such LBP studies used; trees need no
  scaling, and bagging is robust on 70 subjects with 432 features;
- `majority`: always the training folds' majority class, with p = the training-fold osteoporosis fraction;
- `clinical` (not an image method: age and sex, data.cohort.covariate_matrix): StandardScaler + logistic
  regression (C = 1), the scaler inside the fold; it answers "does the image add anything over age and sex?".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from osteoscreen.core.errors import InputError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

BASELINES = ("majority", "knn-lbp", "ensemble-lbp")
CLINICAL = "clinical"


def build_baseline(name: str, seed: int = 0, n_train: int | None = None) -> Pipeline:
    """A fresh, unfitted scikit-learn pipeline for a baseline method (k of KNN capped at n_train). scikit-learn
    is imported here, not with the module, whose names every command line's parser reads (it loads in 1 s)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "majority":
        return make_pipeline(DummyClassifier(strategy="prior"))
    if name == "knn-lbp":
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=min(5, n_train or 5)))
    if name == "ensemble-lbp":
        return make_pipeline(RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=1))
    if name == CLINICAL:
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES + (CLINICAL,))}")
