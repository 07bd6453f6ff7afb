"""Every method as a scikit-learn estimator on a cohort's subjects.

X is a `Cohort` (or a view of one: `cohort[positions]`), y its binary labels (default: the cohort's own). Each
estimator has `fit(X, y=None)`, `predict_proba(X)` -> [n, 2] (columns: normal, osteoporosis), `predict(X)` -> [n]
at THRESHOLD, and `scores(X)` -> (p_osteoporosis [n], group attention [n, 4] or None); CNN heads also have
`attention(X)` -> [n, 4] over GROUPS (None for `concat`, which has none). Their parameters are plain values, so
`sklearn.base.clone`, `cross_val_predict` and `train_test_split` work on them; features are memoised in
the cohort, so the folds of a cross-validation share them.

- `Baseline(method)`: `majority`, `knn-lbp`, `ensemble-lbp` (on LBP features) and `clinical` (on age and sex);
- `HeadClassifier(head, mode, ...)`: a CNN head (`concat`, `group-attention`, `abmil`, `gated-abmil`, or any head
  registered in models.heads.HEADS) over the shared backbone, frozen or fine-tuned (training.fit).
`make_estimator(method, train_config)` builds the estimator of a method name, as cross-validation runs it.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import fields, replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from osteoscreen.core.arguments import check_range, check_type
from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import flagged
from osteoscreen.data.cohort import Cohort
from osteoscreen.features.lbp import lbp_features
from osteoscreen.methods.baselines import BASELINES, CLINICAL, build_baseline
from osteoscreen.models.heads import head_of
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fit import fit, predict_proba
from osteoscreen.training.fitted import check_both_classes


def _cohort(X) -> Cohort:
    check_type(X, Cohort, "X", "osteoscreen.load_dataset(DATA)")
    return X


def _labelled(X, y) -> Cohort:
    """X with the labels y (scikit-learn passes them), or X as it is when y is None or equal to its labels."""
    cohort = _cohort(X)
    labelled = all(p.label is not None for p in cohort.patches)
    if y is None or (labelled and np.array_equal(np.asarray(y), cohort.labels)):
        return cohort
    return cohort.relabelled(y)


class CohortClassifier(ClassifierMixin, BaseEstimator):
    """What the estimators share: classes, predict_proba and predict from `scores`."""

    def predict_proba(self, X) -> np.ndarray:
        p = self.scores(X)[0]
        return np.stack([1 - p, p], axis=1)

    def predict(self, X) -> np.ndarray:
        return flagged(self.scores(X)[0]).astype(np.int64)

    def _fitted(self):
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")


class Baseline(CohortClassifier):
    """A baseline method (`majority`, `knn-lbp`, `ensemble-lbp`, `clinical`) on the cohort's LBP features or on age
    and sex; seed: the random forest's. `clinical` fits on the training subjects that have age and sex, and scores a
    subject without them at the training prevalence (it knows nothing of that subject), as it scores everyone when
    those training subjects lack a class."""

    def __init__(self, method: str = "knn-lbp", seed: int = 0):
        self.method = method
        self.seed = seed

    def _features(self, cohort: Cohort) -> np.ndarray:
        if self.method == CLINICAL:
            return cohort.covariates
        if self.method == "majority":
            return np.zeros((len(cohort), 1))
        return lbp_features(cohort)[cohort.positions]

    def fit(self, X, y=None) -> Baseline:
        if self.method not in BASELINES + (CLINICAL,):
            raise InputError(f"unknown baseline {self.method!r}; choose one of {', '.join(BASELINES + (CLINICAL,))}")
        check_range(isinstance(self.seed, numbers.Integral) and not isinstance(self.seed, bool) and self.seed >= 0,
                    "seed", "an integer >= 0", self.seed)
        cohort = _labelled(X, y)
        features, labels = self._features(cohort), cohort.labels
        self.classes_ = np.array([0, 1])
        self.prevalence_ = float(labels.mean())
        if self.method != CLINICAL:  # clinical scores everyone at the prevalence instead
            check_both_classes(torch.from_numpy(labels))
        usable = ~np.isnan(features).any(axis=1)
        self.pipeline_ = None
        if len(np.unique(labels[usable])) == 2:
            self.pipeline_ = build_baseline(self.method, self.seed, int(usable.sum()))
            self.pipeline_.fit(features[usable], labels[usable])
        return self

    def scores(self, X) -> tuple[np.ndarray, None]:
        self._fitted()
        features = self._features(_cohort(X))
        p = np.full(len(features), self.prevalence_)
        usable = ~np.isnan(features).any(axis=1)
        if self.pipeline_ is not None and usable.any():
            p[usable] = self.pipeline_.predict_proba(features[usable])[:, 1]
        return p, None


#: HeadClassifier's parameters: TrainConfig's fields (declared there once, with their documentation), except the
#: patch settings, which are the cohort's; {parameter: field} where the name differs (`attention` is a method).
HEAD_PARAMETERS = {"activation" if spec.name == "attention" else spec.name: spec for spec in fields(TrainConfig)
                   if spec.name != "patch"}


class HeadClassifier(CohortClassifier):
    """A CNN head over the shared backbone; its parameters are TrainConfig's fields but `patch`, with `attention`
    named `activation` (defaults: the `osteoscreen` recipe; `HeadClassifier.from_config(recipe_config("paper"))`
    is the paper's). After fit: `model_` (training.fitted.FittedModel) and, fine-tuned, `history_` (per-epoch
    training loss and accuracy).

    Parameters (head and mode may be given by position):
"""

    def __init__(self, head: str = TrainConfig.head, mode: str = TrainConfig.mode, **params):
        unknown = sorted(set(params) - set(HEAD_PARAMETERS))
        if unknown:
            raise TypeError(f"HeadClassifier got unexpected parameter(s) {', '.join(unknown)}; its parameters are "
                            f"{', '.join(HEAD_PARAMETERS)}")
        params |= {"head": head, "mode": mode}
        for name, spec in HEAD_PARAMETERS.items():
            setattr(self, name, params.get(name, spec.default))

    __init__.__signature__ = inspect.Signature(  # what scikit-learn's get_params, clone and repr read
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD if name in ("head", "mode")
                             else inspect.Parameter.KEYWORD_ONLY, default=spec.default)
           for name, spec in HEAD_PARAMETERS.items()])
    __doc__ += "".join(f"    - {name} (default {spec.default!r}): {spec.metadata['doc']}\n"
                       for name, spec in HEAD_PARAMETERS.items())

    @classmethod
    def from_config(cls, config: TrainConfig) -> HeadClassifier:
        """The estimator of a TrainConfig (its patch settings are the cohort's, not the estimator's)."""
        return cls(**{name: getattr(config, spec.name) for name, spec in HEAD_PARAMETERS.items()})

    def train_config(self, cohort: Cohort) -> TrainConfig:
        """The TrainConfig of these parameters for patches cut as the cohort's were (validated here)."""
        params = self.get_params()
        try:
            return TrainConfig(**{spec.name: params[name] for name, spec in HEAD_PARAMETERS.items()},
                               patch=cohort.patch_config)
        except InputError as error:  # name the parameter as the caller did
            renamed = next((name for name, spec in HEAD_PARAMETERS.items()
                            if name != spec.name and str(error).startswith(f"{spec.name}:")), None)
            if renamed is None:
                raise
            raise type(error)(renamed + str(error)[len(HEAD_PARAMETERS[renamed].name):]) from None

    def fit(self, X, y=None) -> HeadClassifier:
        cohort = _labelled(X, y)
        self.model_ = fit(cohort.root, cohort.positions, self.train_config(cohort))
        self.history_ = self.model_.history
        self.classes_ = np.array([0, 1])
        return self

    def scores(self, X) -> tuple[np.ndarray, np.ndarray | None]:
        self._fitted()
        cohort = _cohort(X)
        return predict_proba(self.model_, cohort.root, cohort.positions)

    def attention(self, X) -> np.ndarray | None:
        """[n, 4] attention over GROUPS (condyle, angle, premolar, tuberosity) per subject; None for `concat`."""
        return self.scores(X)[1]


def make_estimator(method: str, train: TrainConfig) -> Baseline | HeadClassifier:
    """The unfitted estimator of a method name ("knn-lbp", "group-attention+clinical", ...) with the training
    options and seed of `train`."""
    parsed = head_of(method)
    if parsed is None:
        return Baseline(method, train.seed)
    head, clinical = parsed
    return HeadClassifier.from_config(replace(train, head=head, clinical=clinical))
