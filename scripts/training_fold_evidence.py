"""Evidence for fine-tuning choices from training folds only (docs/method.md): the outer test subjects are never
trained on, scored or loaded into any statistic.

  probe DATA        inner 5-fold logistic regression, inside each of the 5 outer training folds, on each
                    per-patch feature (pooled last layer, also of standardised patches, or texture
                    statistics; 100 and 224 px)
  finetune DATA     inner 4-fold cross-validation of fine-tuned group-attention on outer fold 0's training
                    subjects (100 epochs, native resolution, class weighting): per split the training curve
                    and the inner validation AUROC, then the pooled inner AUROC and balanced accuracy

Run with the project's venv: .venv/bin/python scripts/training_fold_evidence.py probe runs/demo/data
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from osteoscreen.data.cohort import Cohort
from osteoscreen.data.patches import PatchConfig
from osteoscreen.data.subject_patches import load_dataset_with_patches
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.evaluation.splits import make_folds
from osteoscreen.models.backbones import Backbone
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fit import fit, predict_proba

OUTER = CVConfig(methods=("majority",), protocol="kfold", folds=5, repeats=1)


def probe(cohort: Cohort) -> None:
    labels = cohort.labels
    backbone = Backbone("efficientnet_lite0").eval()
    representations = {}
    with torch.inference_mode():
        for size in (100, 224):
            patches = cohort.render(range(len(cohort)), size).flatten(0, 1)  # [N*8, 1, s, s] plain views
            # each patch standardised to mean 0.5, sd 0.15: is the input's normalisation what hides the signal?
            spread = patches.std(dim=(2, 3), keepdim=True).clamp(min=1e-3)
            standardised = (patches - patches.mean(dim=(2, 3), keepdim=True)) / spread * 0.15 + 0.5
            variants = (("pooled", backbone, patches), ("texture", backbone.texture_features, patches),
                        ("pooled, patch std.", backbone, standardised))
            for name, extract, inputs in variants:
                features = torch.cat([extract(chunk) for chunk in inputs.split(64)])
                representations[f"{name} {size} px"] = features.view(len(cohort), -1).numpy()
    folds = make_folds(labels, OUTER, 0)
    for name, features in representations.items():
        aurocs, accuracies = [], []
        for fold in folds:
            x, y = features[fold.train], labels[fold.train]
            model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000, class_weight="balanced"))
            p = cross_val_predict(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                  method="predict_proba")[:, 1]
            aurocs.append(roc_auc_score(y, p))
            accuracies.append(balanced_accuracy_score(y, p >= 0.5))
        print(f"{name:28s} {features.shape[1]:6d} dims: inner AUROC {np.mean(aurocs):.3f}, "
              f"BA {np.mean(accuracies):.3f} (mean of {len(folds)} training folds)", flush=True)


def finetune(cohort: Cohort, epochs: int) -> None:
    labels = cohort.labels
    train = make_folds(labels, OUTER, 0)[0].train
    config = TrainConfig(mode="finetune", native_res=True, epochs=epochs, class_weighting=True)
    pooled = np.zeros(len(train))
    splits = StratifiedKFold(4, shuffle=True, random_state=0).split(train, labels[train])
    for split, (inner_train, inner_test) in enumerate(splits):
        start = time.perf_counter()
        model = fit(cohort, train[inner_train], config)
        pooled[inner_test] = predict_proba(model, cohort, train[inner_test])[0]
        loss = model.history["loss"]
        print(f"split {split}: {time.perf_counter() - start:.0f} s; training loss at epochs 1/11/31/91: "
              f"{' / '.join(f'{loss[e]:.4f}' for e in (0, 10, 30, 90) if e < len(loss))}; inner validation AUROC "
              f"{roc_auc_score(labels[train[inner_test]], pooled[inner_test]):.3f}", flush=True)
    print(f"pooled over {len(train)} training subjects: inner AUROC {roc_auc_score(labels[train], pooled):.3f}, "
          f"BA {balanced_accuracy_score(labels[train], pooled >= 0.5):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["probe", "finetune"])
    parser.add_argument("data")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    _, patches = load_dataset_with_patches(args.data, PatchConfig())
    cohort = Cohort(patches, PatchConfig())
    probe(cohort) if args.what == "probe" else finetune(cohort, args.epochs)


if __name__ == "__main__":
    main()
