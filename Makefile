# One entry point for people and CI. Every target sets up what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= config.toml
# The CPU build of torch for tests (CI has no GPU). For serving, `make run` keeps
# whatever torch the venv has, or installs the default (CUDA) build from PyPI.
TORCH_CPU ?= torch==2.13.0
# Test processes (pytest-xdist): the suite takes about half as long on two cores with 2.
PYTEST_WORKERS ?= 2

.PHONY: run doctor test lint typecheck pytest clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(VENV)/.run: $(VENV)/.base pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base pyproject.toml
	$(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: $(VENV)/.run
	@test -f $(CONFIG) || { cp config.example.toml $(CONFIG); echo "created $(CONFIG) from config.example.toml (every key documented there); starting with it"; }
	$(PY) -m bot run --config $(CONFIG)

# Checks everything the bot needs and changes nothing (no config file is created):
# `make doctor DOCTOR_ARGS="--json --no-load"`. Exit 1 when something is wrong.
doctor: $(VENV)/.run
	$(PY) -m bot doctor --config $(CONFIG) $(DOCTOR_ARGS)

lint: $(VENV)/.dev
	$(PY) -m ruff check bot tests migrations benchmarks
	$(PY) -m ruff format --check bot tests migrations benchmarks

typecheck: $(VENV)/.dev
	$(PY) -m mypy

pytest: $(VENV)/.dev
	$(PY) -m pytest -n $(PYTEST_WORKERS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
