# --- MuJoCo trajectory datasets (issue 4) --------------------------------------------------
# make data-mujoco ENV=ant|halfcheetah|walker2d PROFILE=smoke|paper [AGENT=/path/to/ppo.zip]
# Writes $(FSB_DATA)/mujoco/$(ENV)/$(PROFILE)/{shard_*.npz,manifest.json,plot.png}; rerun resumes/repairs.
# NB: PROFILE defaults to paper on a GPU machine; the paper profile takes hours on CPU (see
# tasks/mujoco/README.md), so pass PROFILE=smoke explicitly there if that is not wanted.
AGENT ?=
.PHONY: data-mujoco data-mujoco-all
data-mujoco: $(STAMP)  ## MuJoCo dataset: ENV=ant|halfcheetah|walker2d PROFILE=smoke|paper [AGENT=zip]
	$(PY) -m tasks.mujoco.make_data env=$(ENV) profile=$(PROFILE) $(if $(AGENT),agent.path=$(AGENT),)

data-mujoco-all: $(STAMP)  ## the three MuJoCo datasets at PROFILE
	for e in ant halfcheetah walker2d; do $(PY) -m tasks.mujoco.make_data env=$$e profile=$(PROFILE) || exit 1; done
