"""Peak resident memory (RSS) of a frozen leave-one-out and of one fine-tune fold at batch 32.

Each runs in a fresh Python process that reports its own peak RSS when done: VmHWM of /proc/self/status (the
high-water mark of its own address space; ru_maxrss would carry over the benchmark parent's RSS at fork).
The fine-tune fold trains for one epoch (3 steps of up to 32 subjects = 256 patches at 224 px), then
predicts its test subject: memory does not grow with epochs, so a 100-epoch fold peaks at the same value.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common import Row, default_cohort

TARGET_GIB = 4.0
HERE = Path(__file__).resolve().parent

FROZEN = """
from pathlib import Path
from bench_frozen_loo import ours_once
ours_once(Path({data!r}))
"""

FINETUNE_FOLD = """
from pathlib import Path
from bench_frozen_loo import load
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.evaluation.splits import make_folds
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fit import fit, predict_proba
cohort = load(Path({data!r}))
fold = make_folds(cohort.labels, CVConfig())[0]
config = TrainConfig(mode="finetune", backbone={backbone!r}, weights="none", epochs=1, batch_size=32)
predict_proba(fit(cohort, fold.train, config), cohort, fold.test)
"""


REPORT = "\nprint(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"


def peak_rss_gib(code: str) -> float:
    """Peak RSS in GiB of `code` run in a fresh interpreter (benchmarks/ on its path)."""
    script = f"import sys\nsys.path.insert(0, {str(HERE)!r})\n{code}{REPORT}"
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    kib = next(line.split()[1] for line in output.splitlines() if line.startswith("VmHWM"))
    return int(kib) / 2**20  # VmHWM is in kB (KiB)


def run() -> list[Row]:
    data = str(default_cohort())
    rows = []
    measures = [("finetune fold, AlexNet, batch 32 @224", FINETUNE_FOLD.format(data=data, backbone="alexnet")),
                ("frozen LOO, 4 CNN heads", FROZEN.format(data=data)),
                ("finetune fold, EfficientNet-Lite0, batch 32 @224",
                 FINETUNE_FOLD.format(data=data, backbone="efficientnet_lite0"))]
    for name, code in measures:
        gib = peak_rss_gib(code)
        rows.append(Row(f"peak RSS, {name} (GiB)", f"{gib:.2f}", "", "", f"<= {TARGET_GIB:.0f} GiB",
                        gib <= TARGET_GIB))
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
