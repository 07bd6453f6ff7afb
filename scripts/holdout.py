"""Held-out check of a frozen-mode head: stratified train/test split of a dataset (default 50/20).

Usage: .venv/bin/python scripts/holdout.py DATA [--head group-attention] [--test 20] [--seed 0] [--cache DIR]
Hyperparameters are the fixed defaults of TrainConfig; the test subjects are used once, for the figures.
"""

import argparse

from sklearn.model_selection import train_test_split

from osteoscreen.data.dataset import load_dataset
from osteoscreen.data.patches import PatchConfig
from osteoscreen.evaluation.metrics import screening_metrics
from osteoscreen.landmarks import GROUPS
from osteoscreen.training import Cohort, TrainConfig, fit, predict_proba


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data")
    parser.add_argument("--head", default="group-attention")
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="feature cache directory (e.g. runs/demo/cv/cache)")
    args = parser.parse_args()
    dataset = load_dataset(args.data, check_images=False)
    cohort = Cohort.from_dataset(dataset, PatchConfig(), cache_dir=args.cache)
    labels = cohort.labels
    train, test = train_test_split(range(len(labels)), test_size=args.test, stratify=labels, random_state=args.seed)
    config = TrainConfig(head=args.head, seed=args.seed)
    probability, attention = predict_proba(fit(cohort, train, config), cohort, test)
    metrics = screening_metrics(labels[test], probability)
    print(f"{args.head}: train {len(train)}, test {len(test)} ({labels[test].sum()} osteoporosis)")
    for key in ("OPA", "NOPA", "OA", "balanced_accuracy", "auroc"):
        print(f"  {key}: {metrics[key]:.3f}")
    print(f"  TP/FN/TN/FP: {metrics['tp']}/{metrics['fn']}/{metrics['tn']}/{metrics['fp']}")
    if attention is not None:
        print("  mean attention: " + ", ".join(f"{g} {a:.3f}" for g, a in zip(GROUPS, attention.mean(0), strict=True)))


if __name__ == "__main__":
    main()
