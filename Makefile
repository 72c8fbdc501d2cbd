# Two set-up commands for a new user (see README):  make plan   and   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/medley: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/medley

.PHONY: install plan test lint
install: $(BIN)/medley

plan: install
	$(BIN)/medley plan examples/quickstart.yaml

lint: install
	$(BIN)/ruff check planner power provisioner api tests benchmarks migrations
	$(BIN)/mypy planner power provisioner api

test: install lint
	$(BIN)/python -m pytest
