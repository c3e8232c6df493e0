# Quickstart: `make run` (the main job) and `make test`. Only Python >= 3.11 and make are needed:
# the first target that needs it creates .venv and installs archlab with its test extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
RUN_DIR ?= studies/mqar_mixers-$(shell date +%Y%m%d-%H%M%S)
# The main job: the MQAR study's MAIN_ARMS (the arms its claims name; ARMS=a,b to choose), 3 seeds
# each, at its small setting. The arm list is read from the study file, never copied here.
MAIN_ARMS = $(PY) -c 'from experiments.mqar_mixers import MAIN_ARMS; print(",".join(MAIN_ARMS))'

.PHONY: run test test-slow lint install clean-venv mlflow-ui

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "archlab needs Python >= 3.11 (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

run: $(INSTALLED)
	$(PY) -m launch.study experiments/mqar_mixers.py --setting=small \
		--arms=$(or $(ARMS),$$($(MAIN_ARMS))) --workdir=$(RUN_DIR)

test: $(INSTALLED)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Also trains every MQAR arm to its full budget (tests/test_mqar_learning.py): about an hour.
test-slow: $(INSTALLED)
	ARCHLAB_SLOW_TESTS=1 $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Browses an MLflow store (tracking.backends=...,mlflow): STORE= a run's or a study's directory,
# or the .db file; PORT= (default 5000). The UI is the full `mlflow` package, which archlab does
# not need, so it gets its own venv, at the version of pyproject's mlflow-skinny pin: the one
# that wrote the store's schema.
UI_VENV ?= .venv-mlflow-ui
MLFLOW_VERSION = $(shell sed -n 's/.*"mlflow-skinny==\([^"]*\)".*/\1/p' pyproject.toml)
mlflow-ui:
	@test -n "$(STORE)" || { echo "usage: make mlflow-ui STORE=<run or study directory>"; exit 2; }
	@test -x $(UI_VENV)/bin/python || $(PYTHON) -m venv $(UI_VENV)
	$(UI_VENV)/bin/pip install --quiet mlflow==$(MLFLOW_VERSION)
	db=$(abspath $(STORE)); test -d "$$db" && db="$$db/mlflow.db"; \
	MLFLOW_DISABLE_TELEMETRY=true $(UI_VENV)/bin/mlflow ui --backend-store-uri "sqlite:///$$db" \
		--port $(or $(PORT),5000)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
