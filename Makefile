# ResidualDetectron: set-up, tests, demo and benchmarks.
#
# Every target creates (or reuses) the virtualenv .venv/ with Python >= 3.12
# and installs the package and its dependencies from pyproject.toml into it.

SHELL := /bin/bash
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Python >= 3.12: the first candidate that runs and is new enough (pyenv
# shims exist for versions that are not selected, so each one is tried).
PYTHON ?= $(shell for p in python3.12 python3.13 \
	$$HOME/.pyenv/versions/3.12*/bin/python3.12 $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
PYTEST_WORKERS ?= 2
DEMO_DIR ?= demo_output
BENCH_DIR ?= bench_output

.PHONY: all venv test demo bench train device-kit clean distclean lint

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: no Python >= 3.12 found (looked for python3.12/python3.13 on PATH and under ~/.pyenv/versions)." >&2; \
	  echo "       Install one (e.g. 'pyenv install 3.12') or run 'make PYTHON=/path/to/python3.12 ...'." >&2; \
	  exit 1; fi
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' || \
	  { echo "error: $(PYTHON) is older than 3.12; lsst-pipe-base and lsst-images need >= 3.12." >&2; exit 1; }
	@[ -x $(VPY) ] || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip setuptools wheel
	$(VPY) -m pip install -e '.[test]'
	@touch $(STAMP)

test: venv
	$(VPY) -m pytest -n $(PYTEST_WORKERS) tests

demo: venv
	$(VENV)/bin/residual-detectron demo --out $(DEMO_DIR)

# The benchmarks add the bench extra (scarlet2, the deblender's baseline).
$(VENV)/.bench-installed: $(STAMP)
	$(VPY) -m pip install -e '.[test,bench]'
	@touch $@

bench: venv $(VENV)/.bench-installed
	$(VPY) -m bench --out $(BENCH_DIR)

# The shipped residual package's config by default; e.g. TRAIN_CONFIG=config/train_residual_v2.yaml.
TRAIN_CONFIG ?= config/train_residual.yaml
TRAIN_OUT ?= runs/$(basename $(notdir $(TRAIN_CONFIG)))
# Processes that simulate and deblend the training scenes: one per core (the data do not depend on it).
TRAIN_WORKERS ?= $(shell getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)

train: venv
	$(VENV)/bin/residual-detectron train --config $(TRAIN_CONFIG) --out $(TRAIN_OUT) --workers $(TRAIN_WORKERS)

# What the GPU machine's image lacks, for device/run.sh there (device/README.md).
device-kit: venv
	$(VPY) device/build_kit.py

lint: venv
	$(VPY) -m pip install -q -e '.[dev]'
	$(VPY) -m ruff check python tests bench device

clean:
	rm -rf $(DEMO_DIR) $(BENCH_DIR) .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
