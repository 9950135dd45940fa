# The quick start: `make test` (set up .venv and run the tests) and `make demo` (set up and run the main job).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast lint format demo bench clean

install: $(STAMP)

# Re-install when pyproject.toml changes; the stamp makes `make test` cheap after the first run.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# BasicSR's own calculate_psnr/ssim, the metric tests' oracle. Without its dependencies: they pin opencv-python
	# (clashing with opencv-python-headless) and tb-nightly, and the tests load only its metric modules.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation "basicsr==1.4.2"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The inner loop: everything but the subprocess-heavy tests (demo, torchrun, real signals).
test-fast: install
	$(PY) -m pytest -q -m "not slow"

# The main job, offline: train LKA-NAFNet on the sample photographs, evaluate, compare, restore a folder.
demo: install
	$(PY) scripts/demo.py

# Speed and memory on the current device -> bench/results-<device>.json and .md
bench: install
	$(PY) scripts/bench.py

# ruff, then the layer order of nafrestore/ ([tool.importlinter] in pyproject.toml; README.md, "Architecture").
lint: install
	$(VENV)/bin/ruff check nafrestore tests scripts
	$(VENV)/bin/ruff format --check nafrestore tests scripts
	$(VENV)/bin/lint-imports --no-logo

format: install
	$(VENV)/bin/ruff check --fix nafrestore tests scripts
	$(VENV)/bin/ruff format nafrestore tests scripts

clean:
	rm -rf $(VENV) .pytest_cache
