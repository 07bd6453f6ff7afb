#!/usr/bin/env bash
# The fine-tune path on a CUDA machine, in one short run (docs/performance.md quotes its output):
#   1. the test suite with device auto = cuda;  2. the fine-tune step benchmark on the GPU;
#   3. frozen leave-one-out, all methods, on the GPU;  4. a short fine-tune k-fold run with its projection;
#   5. a model trained on the GPU screens the same radiographs on the GPU and on the CPU alike.
# Usage (repository root, osteoscreen importable or PYTHONPATH=src): bash benchmarks/gpu_check.sh [WORKDIR]
set -u
WORK=${1:-runs/gpu}
mkdir -p "$WORK"
export PYTHONPATH=src:benchmarks${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
osteoscreen() { python3 -m osteoscreen.cli "$@"; }
step() { echo; echo "=== $* ($(date +%T))"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"

step "1. test suite, device auto (cuda)"
timeout 170 python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tail -15

step "2. fine-tune step, AlexNet, 256 patches @224"
BENCH_REPEATS=10 timeout 60 python3 benchmarks/bench_finetune_step.py cuda

step "3. frozen leave-one-out, all methods, cuda"
osteoscreen synth "$WORK/data" >/dev/null
TIMEFORMAT="frozen LOO wall %R s"; time timeout 100 python3 -m osteoscreen.cli cv "$WORK/data" \
    --out "$WORK/frozen" --device cuda 2>&1 | grep -v "it/s\]$" | tail -14

step "4. fine-tune k-fold (5 folds, 10 epochs, group-attention, EfficientNet-Lite0 ImageNet), cuda"
TIMEFORMAT="fine-tune 5-fold wall %R s"; time timeout 100 python3 -m osteoscreen.cli cv "$WORK/data" \
    --out "$WORK/finetune" --mode finetune --methods group-attention --protocol kfold --folds 5 --repeats 1 \
    --epochs 10 --device cuda 2>&1 | grep -v "it/s\]$" | tail -12
python3 - "$WORK/finetune" <<'EOF'
import glob, json, sys
walls = [json.load(open(p))["wall_s"] for p in sorted(glob.glob(f"{sys.argv[1]}/folds/*/*.json"))]
print("fine-tune fold wall times (s):", [round(w, 1) for w in walls])
EOF

step "5. train on cuda, screen on cuda and on cpu"
osteoscreen train "$WORK/data" --out "$WORK/model" --method group-attention --mode finetune --epochs 5 \
    --device cuda 2>&1 | tail -2
osteoscreen synth "$WORK/new" --n 6 --positives 3 --seed 7 >/dev/null
osteoscreen predict "$WORK/model" "$WORK/new" --out "$WORK/screen-cuda" --no-figures 2>&1 | tail -1
CUDA_VISIBLE_DEVICES= python3 -m osteoscreen.cli predict "$WORK/model" "$WORK/new" --out "$WORK/screen-cpu" \
    --no-figures 2>&1 | tail -1
python3 - "$WORK" <<'EOF'
import csv, sys
rows = [list(csv.DictReader(open(f"{sys.argv[1]}/screen-{d}/predictions.csv"))) for d in ("cuda", "cpu")]
gap = max(abs(float(a["p_osteoporosis"]) - float(b["p_osteoporosis"])) for a, b in zip(*rows, strict=True))
same = all(a["decision"] == b["decision"] for a, b in zip(*rows, strict=True))
print(f"cuda vs cpu screening: max |dp| = {gap:.4f}, same decisions: {same}")
EOF
echo "=== done ($(date +%T))"
