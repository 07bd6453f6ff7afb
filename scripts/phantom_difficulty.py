"""How hard a cohort is, by an outside baseline fixed in advance: uniform LBP + logistic regression, leave-one-out.

Usage: .venv/bin/python scripts/phantom_difficulty.py DATA [DATA ...]

Features: the project's uniform-LBP histograms ((P, R) = (8, 1), (16, 2), (24, 3)) of the 100-px patches as
`osteoscreen patches` cuts them; classifier: StandardScaler + LogisticRegression (C = 1, L2), fitted inside each
leave-one-out training fold; reported: balanced accuracy at p = 0.5 and the pooled out-of-fold AUROC, for all 8
patches and for each landmark group's 2 patches alone (where the signal lives). Nothing here is tuned.
"""

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from osteoscreen.core.landmarks import GROUPS
from osteoscreen.data.patches import PatchConfig, to_uint8
from osteoscreen.data.subject_patches import load_dataset_with_patches
from osteoscreen.features.lbp import subject_lbp


def difficulty(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy, pooled AUROC) of leave-one-out LBP + logistic regression."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    probability = cross_val_predict(model, features, labels, cv=LeaveOneOut(), method="predict_proba")[:, 1]
    return balanced_accuracy_score(labels, probability >= 0.5), roc_auc_score(labels, probability)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="+")
    args = parser.parse_args()
    config = PatchConfig()
    for data in args.data:
        dataset, cut = load_dataset_with_patches(data, config)
        labels = dataset.labels
        per_patch = np.stack([[subject_lbp(to_uint8(p.plain_views(config.context)[i:i + 1])) for i in range(8)]
                              for p in cut])  # [N, 8, F]
        rows = [("all 8 patches", per_patch.reshape(len(labels), -1))]
        rows += [(group, per_patch[:, 2 * g:2 * g + 2].reshape(len(labels), -1)) for g, group in enumerate(GROUPS)]
        print(f"{data}: {len(labels)} subjects ({int(labels.sum())} osteoporosis)")
        for name, features in rows:
            balanced, auroc = difficulty(features, labels)
            print(f"  {name:14s} balanced accuracy {balanced:.3f}  AUROC {auroc:.3f}")


if __name__ == "__main__":
    main()
