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

# ---------------------------------------------------------------------------------------------
# Synthetic experiments (section II, appendix B). On a CPU the runs go two at a time (joblib,
# one thread each); on a GPU one after another. Override with LAUNCH=... (e.g. a Slurm launcher:
# LAUNCH="hydra/launcher=submitit_slurm hydra.launcher.partition=gpu").
ifeq ($(PROFILE),smoke)
LAUNCH ?= hydra/launcher=joblib hydra.launcher.n_jobs=2 threads=1 progress=false
else
LAUNCH ?=
endif
TRAIN := $(PY) -m benchmarks.train
REPORT := $(PY) -m benchmarks.report --profile $(PROFILE)

.PHONY: reproduce-fig2 reproduce-fig4 reproduce-fig5 reproduce-fig14 reproduce-synthetic

reproduce-fig2: $(STAMP)  ## Figure 2: LDS
	$(TRAIN) experiment=fig2_lds profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(REPORT) fig2_lds

reproduce-fig4: $(STAMP)  ## Figure 4: induction heads
	$(TRAIN) experiment=fig4_induction_heads profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(REPORT) fig4_induction_heads

reproduce-fig5: $(STAMP)  ## Figure 5: associative recall
	$(TRAIN) experiment=fig5_associative_recall profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(REPORT) fig5_associative_recall

reproduce-fig14: $(STAMP)  ## Figure 14: selective copy
	$(TRAIN) experiment=fig14_selective_copy profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(REPORT) fig14_selective_copy

reproduce-synthetic: reproduce-fig2 reproduce-fig4 reproduce-fig5 reproduce-fig14

.PHONY: bench-speed
bench-speed: $(STAMP)  ## train-step times and mixer time vs length (results/speed/, plots/speed_*); SPEED_ARGS=... adds Hydra overrides
	$(PY) -m benchmarks.speed speed=$(PROFILE) $(SPEED_ARGS)

# --- MuJoCo trajectory datasets (issue 4) --------------------------------------------------
# make data-mujoco ENV=ant|halfcheetah|walker2d PROFILE=smoke|paper [AGENT=/path/to/ppo.zip]
# Writes $(FSB_DATA)/mujoco/$(ENV)/$(PROFILE)/{shard_*.npz,manifest.json,plot.png}; rerun resumes/repairs.
AGENT ?=
.PHONY: data-mujoco data-mujoco-all
data-mujoco: $(STAMP)  ## MuJoCo dataset: ENV=ant|halfcheetah|walker2d PROFILE=smoke|paper [AGENT=zip]
	$(PY) -m tasks.mujoco.make_data env=$(ENV) profile=$(PROFILE) $(if $(AGENT),agent.path=$(AGENT),)

data-mujoco-all: $(STAMP)  ## the three MuJoCo datasets at PROFILE
	for e in ant halfcheetah walker2d; do $(PY) -m tasks.mujoco.make_data env=$$e profile=$(PROFILE) || exit 1; done
