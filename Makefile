# One command per result. PROFILE=smoke (2-core CPU, minutes) or PROFILE=paper (paper sizes; GPU).
SHELL := /bin/bash
# --- setup: .venv with the exact versions of requirements.lock ----------------------------------
PYTHON ?= python3
PY_MINOR := 3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= test,mujoco,trackers,lm
LOCK := requirements.lock
TORCH_VERSION := $(shell sed -n 's/^torch==\([^ ;]*\).*/\1/p' $(LOCK) 2>/dev/null)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_VERSION := 26.3
UV_VERSION := 0.13.9
LOCK_VENV := .cache/uv-venv
# A working venv: its Python is $(PY_MINOR), the core packages import, the project is installed.
VENV_CHECK := import sys, importlib.metadata as m; assert '%d.%d' % sys.version_info[:2] == '$(PY_MINOR)', sys.version; import torch, hydra, omegaconf, numpy; m.version('flash-stu-bench')


# The stamp alone is not trusted: every target that needs the venv runs the cheap check above
# (~2 s). Healthy and newer than pyproject.toml and the lock: nothing to do. Healthy but older: pip
# brings it to the lock in place. Interpreter missing or not runnable, wrong Python, or the check
# fails: the venv is deleted and made again from scratch (never a folder without pyvenv.cfg).
# torch, pinned to the lock's version, comes from the first of: a wheel pip finds on this machine
# (pip's find-links), the PyTorch CPU index (only without an NVIDIA GPU), whatever pip finds (PyPI).
# The project is built with the lock's setuptools (no build isolation: no unpinned build backend).
.PHONY: setup lock venv-check
venv-check:

$(STAMP): pyproject.toml $(LOCK) venv-check
	@set -eu; \
	healthy() { [ -x "$(PY)" ] && "$(PY)" -c "$(VENV_CHECK)" >/dev/null 2>&1; }; \
	if [ -f "$(STAMP)" ] && [ "$(STAMP)" -nt pyproject.toml ] && [ "$(STAMP)" -nt "$(LOCK)" ] && healthy; then exit 0; fi; \
	if [ -z "$(TORCH_VERSION)" ]; then echo "make setup: no torch==<version> line in $(LOCK)" >&2; exit 1; fi; \
	if [ -e "$(VENV)" ] && ! healthy; then \
	  if [ ! -f "$(VENV)/pyvenv.cfg" ]; then \
	    echo "make setup: $(VENV) exists but is not a virtual environment (no pyvenv.cfg); move it away or pick another VENV=" >&2; exit 1; fi; \
	  if [ -x "$(PY)" ]; then why=$$("$(PY)" -c "$(VENV_CHECK)" 2>&1 | tail -n 1 || true); else why="$(PY) is missing"; fi; \
	  echo "[setup] $(VENV) is broken ($${why:-$(PY) does not run}); deleting it and making it again"; \
	  rm -rf "$(VENV)"; \
	fi; \
	if [ ! -e "$(VENV)" ]; then \
	  exe=$$(command -v "$(PYTHON)" 2>/dev/null || true); \
	  if [ -z "$$exe" ]; then \
	    echo "make setup: '$(PYTHON)' is not on PATH. This project needs Python $(PY_MINOR): install it and run make setup PYTHON=python$(PY_MINOR) (or PYTHON=/path/to/python$(PY_MINOR))" >&2; exit 1; fi; \
	  ver=$$("$(PYTHON)" -c 'import sys; print("%d.%d.%d %s" % (*sys.version_info[:3], sys.executable))' 2>/dev/null) || { \
	    echo "make setup: PYTHON=$(PYTHON) ($$exe) does not run. This project needs Python $(PY_MINOR): make setup PYTHON=python$(PY_MINOR) (or PYTHON=/path/to/python$(PY_MINOR))" >&2; exit 1; }; \
	  case "$$ver" in "$(PY_MINOR)".*) ;; *) \
	    echo "make setup: PYTHON=$(PYTHON) is Python $$ver, but this project is pinned to Python $(PY_MINOR) (.python-version, requires-python, $(LOCK)). Pick a $(PY_MINOR) interpreter: make setup PYTHON=python$(PY_MINOR) (or PYTHON=/path/to/python$(PY_MINOR))" >&2; exit 1;; esac; \
	  echo "[setup] making $(VENV) with Python $$ver"; \
	  "$(PYTHON)" -m venv "$(VENV)"; \
	fi; \
	"$(PY)" -m pip install -q "pip==$(PIP_VERSION)"; \
	"$(PY)" -m pip install -q -c "$(LOCK)" setuptools; \
	if "$(PY)" -m pip install -q --no-index --no-deps "torch==$(TORCH_VERSION)" 2>/dev/null; then \
	  echo "[setup] torch $(TORCH_VERSION): a local wheel (or already installed)"; \
	elif ! nvidia-smi -L >/dev/null 2>&1 && "$(PY)" -m pip install -q --no-deps --index-url "$(TORCH_CPU_INDEX)" "torch==$(TORCH_VERSION)"; then \
	  echo "[setup] torch $(TORCH_VERSION) from $(TORCH_CPU_INDEX)"; \
	else \
	  "$(PY)" -m pip install -q --no-deps -c "$(LOCK)" "torch==$(TORCH_VERSION)"; \
	fi; \
	"$(PY)" -m pip install -q -c "$(LOCK)" --no-build-isolation -e ".[$(EXTRAS)]"; \
	if ! healthy; then echo "make setup: installed, but $(PY) fails the check:" >&2; "$(PY)" -c "$(VENV_CHECK)"; exit 1; fi; \
	touch "$(STAMP)"

# Regenerates requirements.lock with uv (in $(LOCK_VENV)): the existing pins are kept unless
# pyproject.toml needs others; UPGRADE=1 re-resolves everything to the newest allowed versions.
lock:  ## regenerate requirements.lock from pyproject.toml (keeps current pins; UPGRADE=1: newest)
	@test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra test --extra mujoco --extra trackers --extra lm --python-version $(PY_MINOR) \
	  --python-platform x86_64-unknown-linux-gnu --no-header $(if $(UPGRADE),--upgrade) -q -o $(LOCK)
	@{ echo "# Every package of 'pip install -e .[test,mujoco,trackers,lm]', pinned: make setup installs with pip -c $(LOCK)."; \
	   echo "# Regenerate with: make lock   (UPGRADE=1 for the newest versions pyproject.toml allows), i.e."; \
	   echo "#   uv pip compile pyproject.toml --extra test --extra mujoco --extra trackers --extra lm --python-version $(PY_MINOR) \\"; \
	   echo "#     --python-platform x86_64-unknown-linux-gnu --no-header [--upgrade] -o $(LOCK)   (uv $(UV_VERSION))"; \
	   echo "# uv keeps the pins already in this file unless told to upgrade. The first pins were the versions"; \
	   echo "# of the .venv the committed results were made with (its pip freeze, passed as -c)."; \
	   echo "# torch==X matches the local CPU wheel X+cpu too. nvidia-*, cuda-* and triton come from torch's"; \
	   echo "# PyPI (CUDA) metadata: the CPU wheel does not need them, and pip -c never installs a package"; \
	   echo "# that nothing requests. The [gpu] extra is not locked ([slurm] is part of [test])."; \
	   grep -v '^# This file was autogenerated' $(LOCK); } > $(LOCK).tmp && mv $(LOCK).tmp $(LOCK)
	@echo "[lock] $(LOCK): $$(grep -c '^[A-Za-z0-9]' $(LOCK)) pinned packages"

setup: $(STAMP)  ## make .venv (Python 3.11) with the project and its extras at the versions of requirements.lock; remakes a broken .venv
	@"$(PY)" -c "import sys, importlib.metadata as m; print('[setup] $(VENV) ready: Python %d.%d.%d,' % sys.version_info[:3], 'torch', m.version('torch'))"

test: $(STAMP)  ## the test suite (CPU; slow end-to-end tests run at smoke size)
	$(PY) -m pytest -q

help:  ## this list: targets, then the paper results `make reproduce-<E>` knows
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):.*## (.*)/  make \1\t\2/' | expand -t 32
	@echo "Paper results (make reproduce-<E> [PROFILE=smoke|paper] [ARGS=...] [LAUNCH=...]; conf/experiment/<E>.yaml):"
	@for f in conf/experiment/[!_]*.yaml; do n=$$(basename $$f .yaml); d=$$(sed -n '2s/^# //p' $$f | cut -c1-90); printf "  make reproduce-%-10s %s\n" "$$n" "$$d"; done

models: $(STAMP)  ## table of every registered model
	$(PY) -m models

# ---------------------------------------------------------------------------------------------
# Paper results. ONE rule: make reproduce-<E> runs conf/experiment/<E>.yaml through
# benchmarks.reproduce (checks every job first, makes data, runs the sweep, evaluates, reports under
# results/<E>/<PROFILE>/ and plots/<E>/<PROFILE>/). PROFILE=smoke (2-core CPU, minutes) or paper.
# On a CPU the smoke sweeps run two at a time (joblib, one thread each); override with
# LAUNCH=... (e.g. LAUNCH="hydra/launcher=submitit_slurm hydra.launcher.partition=gpu").
PROFILE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo paper || echo smoke)
ENV ?= ant
ARGS ?=
ifeq ($(PROFILE),smoke)
LAUNCH ?= hydra/launcher=joblib hydra.launcher.n_jobs=2 threads=1 progress=false
else
LAUNCH ?=
endif
export PYTHONUNBUFFERED := 1

.PHONY: test help models reproduce-synthetic reproduce-robotics reproduce-fig13 reproduce-lm bench-speed bench-trials gpu-check gpu-wheels results-page data-mujoco data-mujoco-all

reproduce-%: $(STAMP)  ## a paper result: make reproduce-table2 (see the list below)
	$(PY) -m benchmarks.reproduce experiment=$* profile=$(PROFILE) $(LAUNCH) $(ARGS)

reproduce-fig13: reproduce-fig3 ; @:  ## Figure 13 is drawn with Figure 3

reproduce-lm: $(STAMP)  ## section IV: data, the four language models (torchrun, 2 processes on a CPU), Tables IV/V, Figures 10/11
	$(PY) -m lm.reproduce profile=$(PROFILE) $(ARGS)

reproduce-synthetic: reproduce-fig2 reproduce-fig4 reproduce-fig5 reproduce-fig5_adjacent reproduce-fig5_zoology reproduce-fig5_safari reproduce-fig14 reproduce-fig14_copy4 reproduce-sensitivity ; @:  ## Figures 2, 4, 5, 14, their task variants and the sensitivity report

reproduce-robotics: reproduce-table1 reproduce-table2 reproduce-table6 reproduce-table7 reproduce-table8 reproduce-table9 reproduce-table10 ; @:  ## all of section III

bench-speed: reproduce-speed ; @:  ## train-step times and mixer time vs length (results/speed/<PROFILE>/)
gpu-wheels:  ## (where there is network) the wheels gpu-check installs on a GPU machine without network: .whl/
	PY=$(PY) bash scripts/gpu_wheels.sh

gpu-check:  ## (on a GPU machine, no venv needed) CUDA tests, Table I, speed, batched trials, Figure 2: results/gpu/
	bash scripts/gpu_check.sh $(STEPS)

results-page: $(STAMP)  ## results/README.md: every committed result beside the paper, each claim's verdict, from the records
	$(PY) -m benchmarks.results_page

bench-trials: reproduce-trial_batching ; @:  ## batched trials vs one by one, ms per trial-step at the Figure 2/4 sizes

# make data-mujoco ENV=ant|halfcheetah|walker2d PROFILE=smoke|paper [AGENT=/path/to/ppo.zip]
AGENT ?=
data-mujoco: $(STAMP)  ## MuJoCo dataset: ENV=ant|halfcheetah|walker2d PROFILE=smoke|paper [AGENT=zip]
	$(PY) -m tasks.mujoco.make_data env=$(ENV) profile=$(PROFILE) $(if $(AGENT),agent.path=$(AGENT),)

data-mujoco-all: $(STAMP)  ## the three MuJoCo datasets at PROFILE
	for e in ant halfcheetah walker2d; do $(PY) -m tasks.mujoco.make_data env=$$e profile=$(PROFILE) || exit 1; done

# Short names of results declared under longer experiment names (a recipe, so the pattern rule does not apply).
reproduce-fig3: reproduce-fig3_landscape ; @:  ## Figures 3 and 13 (LDS landscapes, Hessian ratios)
reproduce-fig24: reproduce-fig24_landscape ; @:  ## Figure 24 (robotics Hessian ratios)
reproduce-fig12: reproduce-fig12_filters ; @:  ## Figure 12 (spectral filters)
reproduce-table1: reproduce-table1_timing ; @:  ## Table I (sizes, time per train step here)
reproduce-ablations: reproduce-table8 reproduce-table9 reproduce-table10 ; @:  ## Tables VIII-X
