# One command per result. PROFILE=smoke (2-core CPU, minutes) or PROFILE=paper (paper sizes; GPU).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= test,mujoco
PROFILE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo paper || echo smoke)
ENV ?= ant
RUNS ?= runs
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-all models clean-runs

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0 || $(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)  ## make .venv and install the project with its test extras

test: $(STAMP)  ## the test suite (CPU; slow end-to-end tests run at smoke size)
	$(PY) -m pytest -q

models: $(STAMP)  ## table of every registered model
	$(PY) -m models
