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

# The suite in one test worker per core, each on its share of the cores (tests/conftest.py; one thread on 2 cores),
# under the AVX2 kernel pin (pytest's `-p osteoscreen.core.kernels`, the variables of the portability issue's AVX2
# emulation: `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ...`), so on any x86-64 CPU with AVX2 the suite runs
# the ordinary CPU's kernels; every computation runs on TrainConfig.threads, and the tests that compare thread
# counts and cores set their own. Each test file whole in one worker (pytest-xdist `--dist loadfile`): its module
# fixtures are built once, and the Ray tests start one local Ray instance at a time.
test: lint
	$(PY) scripts/licences.py
	$(PY) -m pytest -n auto --dist loadfile

clean:
	rm -rf runs .pytest_cache .ruff_cache
