# Each target makes its own virtual environment, so both work on a fresh machine with python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: serve samples train-deps test train train-cv accelerator-prepare accelerator-bring-back bench docker-build clean

$(VENV)/.serve-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.train-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train]'
	touch $(VENV)/.serve-installed $@

$(VENV)/.dev-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,dev,ray]'
	touch $(VENV)/.serve-installed $(VENV)/.train-installed $@

serve: $(VENV)/.serve-installed  ## set up and serve the default model on 127.0.0.1:8000 (MODEL_PATH=... serves yours)
	$(PY) -m service

samples: $(VENV)/.serve-installed  ## copy 4 held-out ELPV cells per class into samples/ (installs elpv-dataset, ~90 MB)
	$(PY) -m pip install --quiet 'elpv-dataset>=1.0'
	$(PY) -m training.samples --out samples

train-deps: $(VENV)/.train-installed  ## install the training extra (TensorFlow, tf2onnx, scikit-learn, ELPV) only
	@echo "training dependencies installed: $(VENV)/bin/train --help"

test: $(VENV)/.dev-installed  ## set up and run lint and the whole test suite
	@# tests/browser need Debian's chromium, the tests marked postgres Debian's postgresql (initdb, pg_ctl); without
	@# root or apt they skip and say why.
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "could not install chromium: the browser tests will be skipped" >&2; fi
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
	  || echo "could not install postgresql: the postgres tests will be skipped" >&2; fi
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports  # the layer contracts in pyproject.toml
	$(PY) -m pytest

train: $(VENV)/.dev-installed  ## reproduce the shipped default model (~80 min on 2 cores with AMX)
	$(PY) -m training --mixed-precision --quarter-turns --int8 --epochs 40 --threshold auto --out models
	$(PY) -m training.variants --model models/model.onnx  # measured precision variants for PRECISION=auto

# The model card's cross-validated recipe, chosen out of fold: 5 folds x 40 epochs, then one final fit on all 1,968 non-test
# images (~10 h on 2 idle cores with AMX). Checkpoints every epoch: run it again with RESUME=--resume.
train-cv: $(VENV)/.dev-installed  ## cross-validated recipe into build/cv5 (models/ is replaced by hand, by the card's rule)
	$(PY) -m training --cv 5 --epochs 40 --lr-schedule cosine --warmup-epochs 2 --ema --ema-momentum 0.995 \
	  --mixed-precision --tta --int8 --compare-with models/model.onnx \
	  --checkpoint-dir models/checkpoints/cv5 --out build/cv5 $(RESUME)

# The recipe search on a lent GPU (docs/accelerator.md): prepare here, run there (the device tool), bring back here.
accelerator-prepare: $(VENV)/.dev-installed  ## ELPV non-test arrays + the wheels the GPU machine lacks, into build/accelerator
	$(PY) -m training.accelerator.prepare

accelerator-bring-back: $(VENV)/.dev-installed  ## the search's weights (build/accelerator/results) -> ONNX, card table, verdict
	$(PY) -m training.accelerator.bring_back --results build/accelerator/results --out build/accelerator/model

bench: $(VENV)/.dev-installed  ## the benchmark table (see BENCHMARKS.md); BENCH_ARGS=--quick for a smoke run
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq wrk; \
	  else echo "make bench needs wrk: sudo apt-get install wrk (or brew install wrk)" >&2; exit 1; fi; }
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

docker-build:  ## the deployment image (BASE_IMAGE overrides python:3.11-slim)
	docker build --network host $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t cell-classifier .
