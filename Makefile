# Two commands for a newcomer: `make run` (install + materialize the default pipeline)
# and `make test`. `make dev` opens the Dagster UI on the same instance.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export ODDS_PIPELINE_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(ODDS_PIPELINE_HOME)/dagster_home
PYTEST_ARGS ?=

.PHONY: install run dev test lint format bench clean-state mlflow drill

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject: on a CPU machine pip takes the local CPU wheel.
	$(BIN)/pip install --quiet -e '.[dev]'
	@# Debian's PostgreSQL for the Postgres-backed instance test (never fails the install).
	@bash scripts/ensure_postgres.sh
	@# Debian's chromium and chromedriver for the real-browser UI test (never fails the install).
	@bash scripts/ensure_chromium.sh
	@touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml:
	@mkdir -p $(DAGSTER_HOME)
	@cp -n data/dagster_home/dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true

run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@# The .dagster/repository tag files the run under its job in the UI (the job page lists
	@# runs by that label; `dagster job execute -m` does not set it).
	@# A candidate refused by a quality gate fails the run at that gate (by design: the alias
	@# does not move); `models --require-judged` then tells a refusal from a broken pipeline.
	$(BIN)/dagster job execute -m odds_pipeline.definitions -j default_pipeline \
		--tags '{"odds_pipeline/trigger": "make run", ".dagster/repository": "__repository__@odds_pipeline"}' \
		|| echo ">>> default_pipeline did not end green: see each model's decision below"
	$(BIN)/odds-pipeline models --require-judged
	$(BIN)/dagster asset materialize -m odds_pipeline.definitions \
		--select win_probability_predictions,arbitrage_scores,arbitrage_opportunities \
		--partition "$$($(BIN)/odds-pipeline latest-day --source simulator)"
	$(BIN)/odds-pipeline summary
	@echo ""
	@echo "Done. Dagster UI:  make dev     (then http://127.0.0.1:3000)"
	@echo "      MLflow UI:  make mlflow  (then http://127.0.0.1:5000)"

drill: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@# The drift drill (odds_pipeline/drill.py) in its own state home, on the instance above.
	ODDS_PIPELINE_HOME=$(ODDS_PIPELINE_HOME)/drill $(BIN)/python -m odds_pipeline.drill

dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@# `dagster dev` under a small launcher (odds_pipeline/devserver.py): Ctrl-C or SIGTERM stop
	@# the UI, daemon and code servers within seconds and leave no process behind (issue #11).
	$(BIN)/python -m odds_pipeline.devserver -w workspace.yaml -h 127.0.0.1 -p 3000

test: $(STAMP)
	$(BIN)/ruff check odds_pipeline odds_pipeline_tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check odds_pipeline odds_pipeline_tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/ruff format --check odds_pipeline odds_pipeline_tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format odds_pipeline odds_pipeline_tests benchmarks
	$(BIN)/ruff check --fix odds_pipeline odds_pipeline_tests benchmarks

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

mlflow: $(STAMP)
	@echo "MLflow UI: http://127.0.0.1:5000  (store: $(ODDS_PIPELINE_HOME)/mlflow)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(ODDS_PIPELINE_HOME)/mlflow/mlflow.db --default-artifact-root $(ODDS_PIPELINE_HOME)/mlflow/artifacts --host 127.0.0.1 --port 5000

clean-state:
	rm -rf data/warehouse data/mlflow data/reports data/raw data/datasets data/optuna
