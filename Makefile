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

# --- Robotics (section III, appendix C/D; issue 5) ------------------------------------------
# make reproduce-table2 [PROFILE=smoke|paper] [RESULTS=results] [PLOTS=plots] [ARGS="hydra overrides"]
#   [DATA_ARGS="make_data overrides"] [ROBOT_ARGS="benchmarks.robotics options"]
# Each target: the dataset (made if missing, verified otherwise), the training sweep (resumable: runs
# with a record are skipped), then the evaluation, tables (results/tableN.md/.tex) and figures.
RESULTS ?= results
PLOTS ?= plots
DATA_ARGS ?=
ROBOT_ARGS ?=
ROBOT := $(PY) -m benchmarks.robotics --profile $(PROFILE) --results $(RESULTS) --plots $(PLOTS) $(ROBOT_ARGS)
MAKE_DATA = $(PY) -m tasks.mujoco.make_data profile=$(PROFILE) $(DATA_ARGS) env=

.PHONY: reproduce-table1 reproduce-table2 reproduce-table6 reproduce-table7 reproduce-ablations reproduce-robotics

reproduce-table2: $(STAMP)  ## Table II + Figures 6, 7, 8, 22, 23 (Ant-v1)
	$(MAKE_DATA)ant
	$(TRAIN) experiment=table2_ant profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(ROBOT) table2

reproduce-table6: $(STAMP)  ## Table VI + Figures 16, 17, 18 (HalfCheetah-v1)
	$(MAKE_DATA)halfcheetah
	$(TRAIN) experiment=table6_halfcheetah profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(ROBOT) table6

reproduce-table7: $(STAMP)  ## Table VII + Figures 19, 20, 21 (Walker2d-v1)
	$(MAKE_DATA)walker2d
	$(TRAIN) experiment=table7_walker2d profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(ROBOT) table7

reproduce-table1: $(STAMP)  ## Table I: parameters, sizes, measured time per train step (this machine)
	$(ROBOT) table1

reproduce-ablations: $(STAMP)  ## Tables VIII, IX, X: width / depth / input-noise ablations (Ant-v1)
	$(MAKE_DATA)ant
	$(TRAIN) experiment=table8_stu profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(TRAIN) experiment=table9_stu_t profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(TRAIN) experiment=table10_transformer profile=$(PROFILE) $(LAUNCH) $(ARGS)
	$(ROBOT) table8 table9 table10

reproduce-robotics: reproduce-table1 reproduce-table2 reproduce-table6 reproduce-table7 reproduce-ablations  ## all of section III

# --- Loss landscapes (Figure 3) and Hessian ratios (Figure 13) on the LDS ------------------------
.PHONY: reproduce-fig3 reproduce-fig13
reproduce-fig3: $(STAMP)  ## Figures 3 and 13: loss landscape and curvature after 10 LDS steps
	$(PY) -m benchmarks.landscape profile=$(PROFILE) $(ARGS)
reproduce-fig13: reproduce-fig3

.PHONY: reproduce-fig24
reproduce-fig24: $(STAMP)  ## Figure 24: Hessian-ratio heat maps of the robotics models (width 128, 4 layers) on Ant-v1
	$(MAKE_DATA)ant
	$(PY) -m benchmarks.landscape figure=fig24 profile=$(PROFILE) $(ARGS)

.PHONY: reproduce-fig12
reproduce-fig12: $(STAMP)  ## Figure 12: the first 20 spectral filters (L=512; FIG12_ARGS="--seq-len 1000 --variant hankel_L")
	$(PY) -m benchmarks.filters $(FIG12_ARGS)
