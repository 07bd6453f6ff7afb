PY := .venv/bin/python
STAMP := .venv/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test lint bench finetune-cpu landmarks-demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,ray,onnx]"
	@# the browser test drives Debian's Chromium through its ChromeDriver (no browser download); the PACS tests
	@# start Debian's Orthanc (with its DICOMweb plugin) on loopback and validate files with dicom3tools' dciodvfy
	{ command -v chromedriver && command -v Orthanc && command -v dciodvfy; } >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver orthanc \
		orthanc-dicomweb dicom3tools >/dev/null; }
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/osteoscreen demo --out runs/demo

# The reduced fine-tune protocol that shows learning on 2 CPU cores (docs/method.md): 5-fold x 1, 100 epochs,
# EfficientNet-Lite0 at native 100 px, texture patch feature, class weighting; the baselines on the same folds.
finetune-cpu: $(STAMP)
	test -f runs/demo/data/subjects.csv || .venv/bin/osteoscreen synth runs/demo/data
	.venv/bin/osteoscreen cv runs/demo/data --out runs/finetune-cpu --mode finetune --native-res --class-weighting \
		--methods majority,knn-lbp,ensemble-lbp,group-attention --protocol kfold --folds 5 --repeats 1

# A landmark suggester trained on 56 phantom subjects places the landmarks of 14 others it never saw (another seed;
# DICOM), with report.html (docs/landmarks.md).
landmarks-demo: $(STAMP)
	.venv/bin/osteoscreen synth runs/landmarks-demo/train --n 56 --positives 39 --seed 0
	.venv/bin/osteoscreen synth runs/landmarks-demo/new --n 14 --positives 10 --seed 1 --format dicom
	.venv/bin/osteoscreen landmarks train runs/landmarks-demo/train --out runs/landmarks-demo/lmodel
	.venv/bin/osteoscreen landmarks evaluate runs/landmarks-demo/new --lmodel runs/landmarks-demo/lmodel \
		--out runs/landmarks-demo/evaluation

lint: $(STAMP)
	.venv/bin/ruff check src tests scripts benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The emulation of an ordinary x86-64 CPU (AVX2, no AVX-512, no native bf16) with one thread: the variables
# osteoscreen.core.kernels sets, set from outside, and OMP_NUM_THREADS=1 (docs/performance.md).
AVX2_EMULATION := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE MKL_ENABLE_INSTRUCTIONS=AVX2 \
	OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=1

# The suite in one test worker per core, each on its share of the cores (tests/conftest.py; pytest-xdist: each
# test file whole in one worker: its module fixtures are built once, and the Ray tests start one local Ray
# instance at a time),
# then the tests that compare results across processes, thread counts and kernels once more under the AVX2
# emulation, in two test workers of one thread each.
test: lint
	$(PY) scripts/licences.py
	$(PY) -m pytest -n auto --dist loadfile
	env $(AVX2_EMULATION) $(PY) -m pytest -n 2 --dist loadfile tests/test_portability.py tests/test_distributed.py \
		"tests/test_performance.py::test_finetune_workers_give_the_same_records_and_a_projection"

clean:
	rm -rf runs .pytest_cache .ruff_cache
