PY := .venv/bin/python
STAMP := .venv/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	@# the browser test drives Debian's Chromium through its ChromeDriver (no browser download)
	command -v chromedriver >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/osteoscreen demo --out runs/demo

lint: $(STAMP)
	.venv/bin/ruff check src tests scripts benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

test: lint
	$(PY) -m pytest

clean:
	rm -rf runs .pytest_cache .ruff_cache
