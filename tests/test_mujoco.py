"""MuJoCo datasets (issue 4): environments, agents (offline / hub / user file), shards, task.

Quick: tiny agents (a few hundred PPO steps) and tiny datasets (a few 40-step trajectories) under
``tmp_path``; the hub is never contacted (``FSB_OFFLINE=1`` or a fake ``FSB_HUB_DIR``).
"""
from __future__ import annotations

import base64
import inspect
import json
import os
import pathlib
import shutil
import socket
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

for _mod in ("mujoco", "gymnasium", "seals", "stable_baselines3"):
    pytest.importorskip(_mod, reason=f"needs the [mujoco] extra ({_mod} is not installed)")

from tasks.mujoco import agents as agents_mod  # noqa: E402
from tasks.mujoco.agents import Agent, hub_reachable, load_sb3_agent, resolve_agent  # noqa: E402
from tasks.mujoco.dataset import (  # noqa: E402
    DatasetError, load_dataset, make_dataset, norm_stats, split_indices,
)
from tasks.mujoco.envs import ROBOTS, dataset_dir, make_env, robot  # noqa: E402
from tasks.mujoco.rollout import rollout  # noqa: E402

pytestmark = pytest.mark.mujoco
REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(n_traj=6, steps=40, shard_size=2, n_envs=2, seed=100, agent_timesteps=128, agent_seed=0, eval_episodes=1)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("FSB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FSB_OFFLINE", "1")
    monkeypatch.delenv("FSB_HUB_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "data"


def untrained_model(env: str, seed: int = 0, **policy_kwargs):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: make_env(env)])
    return PPO("MlpPolicy", venv, n_steps=64, batch_size=32, seed=seed, device="cpu",
               policy_kwargs=dict(net_arch=[16], **policy_kwargs))


# ------------------------------------------------------------------------------- environments
@pytest.mark.parametrize("name", sorted(ROBOTS))
def test_dimensions_and_episode_length(name):
    spec = robot(name)
    env = make_env(name)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (spec.state_dim,)
    assert env.action_space.shape == (spec.action_dim,)
    assert spec.state_dim + spec.action_dim == {"ant": 37, "halfcheetah": 24, "walker2d": 24}[name]
    n, done = 0, False
    zero = np.zeros(spec.action_dim, np.float32)
    while not done:
        obs, _, term, trunc, _ = env.step(zero)
        n += 1
        done = term or trunc
        assert not term, "seals episodes never terminate early"
    assert n == spec.episode_len == 1000


def test_same_seed_same_trajectory():
    agent = Agent(untrained_model("halfcheetah").policy, None, {})
    a = rollout(agent, "halfcheetah", [5, 5, 6], 60, n_envs=3, progress=False)
    b = rollout(agent, "halfcheetah", [6, 5], 60, n_envs=3, progress=False)  # other batch order/size
    assert a["states"].shape == (3, 61, 18) and a["actions"].shape == (3, 60, 6)
    assert np.array_equal(a["states"][0], a["states"][1])
    assert not np.array_equal(a["states"][0], a["states"][2])
    assert np.array_equal(a["states"][2], b["states"][0]) and np.array_equal(a["actions"][0], b["actions"][1])


def test_stochastic_rollout_is_seeded_per_trajectory():
    """action_noise samples the policy's own Gaussian from a generator of the trajectory's seed:
    the same seed gives the same trajectory whatever the batch, and it differs from the mean policy."""
    agent = Agent(untrained_model("halfcheetah").policy, None, {})
    a = rollout(agent, "halfcheetah", [5, 5, 6], 40, n_envs=3, progress=False, action_noise=1.0)
    b = rollout(agent, "halfcheetah", [6, 5], 40, n_envs=1, progress=False, action_noise=1.0)
    det = rollout(agent, "halfcheetah", [5], 40, n_envs=1, progress=False)
    assert np.array_equal(a["actions"][0], a["actions"][1]) and np.array_equal(a["states"][0], b["states"][1])
    assert np.array_equal(a["states"][2], b["states"][0])
    assert not np.allclose(a["actions"][0], det["actions"][0])
    assert np.array_equal(a["states"][0, 0], det["states"][0, 0])  # same reset, other actions from step 0
    with pytest.raises(ValueError, match="action_noise"):
        rollout(agent, "halfcheetah", [5], 5, progress=False, action_noise=-1.0)


# ------------------------------------------------------------------------------------ agents
def test_hub_check_is_fast_and_overridable(monkeypatch):
    monkeypatch.setenv("FSB_OFFLINE", "1")
    t = time.time()
    assert hub_reachable() is False
    monkeypatch.delenv("FSB_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_dns(*a, **k):
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert hub_reachable() is False
    assert time.time() - t < 1.0


def test_offline_trains_caches_and_reuses_local_agent(offline, monkeypatch):
    monkeypatch.delenv("FSB_OFFLINE")
    monkeypatch.setattr(agents_mod, "hub_reachable", lambda *a, **k: False)  # the hub is unreachable
    man = make_dataset("halfcheetah", "smoke", overrides=TINY, progress=False, log=lambda s: None)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    a = man["agent"]
    assert a["source"] == "local" and a["timesteps"] == 128 and a["reused"] is False
    assert np.isfinite(a["mean_return"]) and a["eval_episodes"] == 1
    assert pathlib.Path(a["path"]).is_file() and pathlib.Path(a["path"]).parent == offline / "agents" / "local"
    assert man["seeds"]["first"] == 100 and man["seeds"]["count"] == 6
    assert (dataset_dir("halfcheetah", "smoke") / "plot.png").is_file()

    shutil.rmtree(dataset_dir("halfcheetah", "smoke"))  # a second call, same data root

    def no_training(*a, **k):
        raise AssertionError("the cached agent should have been reused")

    monkeypatch.setattr(agents_mod, "train_local_agent", no_training)
    man2 = make_dataset("halfcheetah", "smoke", overrides=TINY, progress=False, log=lambda s: None)
    assert man2["agent"]["source"] == "local" and man2["agent"]["reused"] is True
    assert man2["agent"]["sha256"] == a["sha256"] and man2["agent"]["mean_return"] == a["mean_return"]
    assert man2["shards"] == man["shards"] or all(
        s2["returns"] == s1["returns"] for s1, s2 in zip(man["shards"], man2["shards"]))


def test_hub_path_reads_fake_hub_dir(tmp_path, monkeypatch, offline):
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    spec = robot("walker2d")
    hub = tmp_path / "hub"
    repo = hub / spec.hub_repo
    repo.mkdir(parents=True)
    model = untrained_model("walker2d", seed=3)
    model.save(repo / spec.hub_filename)
    vn = VecNormalize(DummyVecEnv([lambda: make_env("walker2d")]), norm_obs=True)
    vn.obs_rms.mean[:] = 0.5
    vn.save(str(repo / "vec_normalize.pkl"))
    monkeypatch.setenv("FSB_HUB_DIR", str(hub))
    monkeypatch.delenv("FSB_OFFLINE")
    agent = resolve_agent("walker2d", eval_episodes=1, log=lambda s: None)
    assert agent.record["source"] == "hub" and agent.record["repo"] == "HumanCompatibleAI/ppo-seals-Walker2d-v1"
    assert agent.record["vecnormalize"].endswith("vec_normalize.pkl")
    assert np.isfinite(agent.record["mean_return"])
    obs = np.random.default_rng(0).normal(size=(4, 18)).astype(np.float32)
    want, _ = model.policy.predict(vn.normalize_obs(obs), deterministic=True)
    assert np.allclose(agent.act(obs), np.clip(want, -1, 1))


def test_loader_reads_zip_that_references_imitation(tmp_path, monkeypatch):
    """The hub agents pickle imitation's NormalizeFeaturesExtractor; it loads without imitation."""
    def drop_shim():  # as in a fresh process
        for name in [n for n in sys.modules if n == "imitation" or n.startswith("imitation.")]:
            monkeypatch.delitem(sys.modules, name)

    drop_shim()
    try:
        import imitation  # noqa: F401
        pytest.skip("imitation is installed; the shim is not used")
    except ImportError:
        pass
    agents_mod._install_imitation_shim()
    assert sys.modules["imitation.policies.base"].__dict__.get("__fsb_shim__")
    extractor = sys.modules["imitation.policies.base"].NormalizeFeaturesExtractor
    model = untrained_model("halfcheetah", features_extractor_class=extractor)
    with torch.no_grad():
        model.policy.features_extractor.normalize.running_mean.fill_(0.25)
        model.policy.pi_features_extractor.normalize.running_mean.fill_(0.25)
    path = tmp_path / "agent.zip"
    model.save(path)
    with zipfile.ZipFile(path) as z:  # pickled by reference, as in the hub's zips
        blob = base64.b64decode(json.loads(z.read("data"))["policy_kwargs"][":serialized:"])
    assert b"imitation.policies.base" in blob and b"running_mean" not in blob
    drop_shim()
    agent = load_sb3_agent(path, robot("halfcheetah"))
    obs = np.random.default_rng(1).normal(size=(3, 18)).astype(np.float32)
    want, _ = model.policy.predict(obs, deterministic=True)
    assert np.allclose(agent.act(obs), np.clip(want, -1, 1), atol=1e-6)


def test_user_agent_path_is_used_and_recorded(tmp_path, offline):
    path = tmp_path / "mine.zip"
    untrained_model("halfcheetah").save(path)
    man = make_dataset("halfcheetah", "smoke", agent_path=str(path), overrides=TINY, progress=False, log=lambda s: None)
    assert man["agent"]["source"] == "user" and man["agent"]["path"] == str(path.resolve())


# --------------------------------------------------------------------------------- shards
def test_corrupt_shard_reported_and_only_it_remade(offline, tmp_path):
    make_dataset("halfcheetah", "smoke", overrides=TINY, progress=False, log=lambda s: None)
    ddir = dataset_dir("halfcheetah", "smoke")
    data, man = load_dataset("halfcheetah", "smoke")
    assert data["states"].shape == (6, 41, 18) and man["n_shards"] == 3
    assert list(data["seeds"]) == list(range(100, 106))
    shards = sorted(ddir.glob("shard_*.npz"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
    bad = shards[1]
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated
    with pytest.raises(DatasetError, match=str(bad)):
        load_dataset("halfcheetah", "smoke")
    bad.write_bytes(b"x" * man["shards"][1]["bytes"])  # same size, wrong bytes
    with pytest.raises(DatasetError, match="checksum"):
        load_dataset("halfcheetah", "smoke")
    msgs = []
    make_dataset("halfcheetah", "smoke", overrides=TINY, progress=False, log=msgs.append)
    assert any(str(bad) in m for m in msgs)
    data2, _ = load_dataset("halfcheetah", "smoke")
    for p in shards:
        if p != bad:
            assert p.stat().st_mtime_ns == mtimes[p.name], f"{p.name} was rewritten"
    for k in data:
        assert np.array_equal(data[k], data2[k]), "the remade shard differs"


def test_manifest_from_another_env_or_settings_refused(offline):
    make_dataset("halfcheetah", "smoke", overrides=TINY, progress=False, log=lambda s: None)
    src = dataset_dir("halfcheetah", "smoke") / "manifest.json"
    dst = dataset_dir("walker2d", "smoke")
    dst.mkdir(parents=True)
    (dst / "manifest.json").write_text(src.read_text())
    with pytest.raises(DatasetError, match="HalfCheetah"):
        load_dataset("walker2d", "smoke")
    with pytest.raises(DatasetError, match="refusing"):
        make_dataset("walker2d", "smoke", overrides=TINY, progress=False, log=lambda s: None)
    with pytest.raises(DatasetError, match="other settings"):
        make_dataset("halfcheetah", "smoke", overrides={**TINY, "steps": 50}, progress=False, log=lambda s: None)


# ------------------------------------------------------------------------------------ task
def _task(**kw):
    from tasks.mujoco.task import MujocoTask

    args = dict(env="halfcheetah", data_profile="smoke", context=16, val_fraction=0.34, noise_std=0.0, noise_freq=0.0,
                progress=False)
    args.update(kw)
    return MujocoTask(**args)


def test_task_split_windows_and_normalisation(offline):
    make_dataset("halfcheetah", "smoke", overrides=TINY, progress=False, log=lambda s: None)
    task = _task()
    data, _ = load_dataset("halfcheetah", "smoke")
    train, val = split_indices(6, 0.34)
    assert list(task.train_idx) == list(train) == [0, 1, 2, 3] and list(task.val_idx) == list(val) == [4, 5]
    assert (task.d_in, task.d_out, task.seq_len, task.kind) == (24, 18, 16, "continuous")

    # normalisation statistics come from the training trajectories only
    want = norm_stats(data["states"][train], data["actions"][train])
    assert np.allclose(task.stats["state_mean"], want["state_mean"])
    everything = norm_stats(data["states"], data["actions"])
    assert not np.allclose(task.stats["state_mean"], everything["state_mean"])
    assert (dataset_dir("halfcheetah", "smoke") / "norm_stats_val0.34.json").is_file()

    # every training window is a slice of a training trajectory and of no validation trajectory
    xn = task.normalize_states(data["states"])
    un = task.normalize_actions(data["actions"])
    batch = task.sample(32, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (32, 16, 24) and batch.targets.shape == (32, 16, 18)
    for inp, tgt in zip(batch.inputs.numpy(), batch.targets.numpy()):
        hits = [(i, t) for i in range(6) for t in range(40 - 16 + 1)
                if np.array_equal(xn[i, t:t + 16], inp[:, :18]) and np.array_equal(un[i, t:t + 16], inp[:, 18:])
                and np.array_equal(xn[i, t + 1:t + 17], tgt)]
        assert hits and all(i in train for i, _ in hits)

    # validation: every validation transition scored exactly once, deterministically, from val data only
    batches = list(task.val_batches(batch_size=3))
    assert sum(int(b.mask.sum()) for b in batches) == task.n_val_positions() == 2 * 40
    again = list(task.val_batches(batch_size=3))
    assert all(torch.equal(a.inputs, b.inputs) and torch.equal(a.mask, b.mask) for a, b in zip(batches, again))
    perfect = sum(float(task.loss(b.targets, b)) for b in batches)
    assert perfect == 0.0
    vt = task.val_trajectories()
    assert vt["states"].shape == (2, 41, 18) and list(vt["seeds"]) == [104, 105]
    assert np.array_equal(vt["states"], data["states"][4:])

    # the paper's loss: half the squared Euclidean distance, averaged over scored positions
    b = batches[0]
    out = b.targets + 1.0
    assert float(task.loss(out, b)) == pytest.approx(0.5 * 18)

    d = task.describe()
    assert d["agent"]["source"] == "local" and "mean_return" in d["agent"] and d["seeds"]["first"] == 100
    assert d["n_train"] == 4 and d["n_val"] == 2


def test_task_input_noise_per_step(offline):
    make_dataset("halfcheetah", "smoke", overrides=TINY, progress=False, log=lambda s: None)
    clean = _task().sample(64, torch.Generator().manual_seed(1))
    noisy = _task(noise_std=0.5, noise_freq=0.1).sample(64, torch.Generator().manual_seed(1))
    assert torch.equal(clean.targets, noisy.targets)
    hit = (noisy.inputs != clean.inputs).any(-1)  # (B, L): which steps got noise
    assert 0.05 < hit.float().mean() < 0.15
    assert ((noisy.inputs != clean.inputs).all(-1) == hit).all(), "a noised step gets noise on every feature"
    again = _task(noise_std=0.5, noise_freq=0.1).eval_batch(8, seed=3)
    assert torch.equal(again.inputs, _task().eval_batch(8, seed=3).inputs), "evaluation is never noised"


# ---------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["mujoco_ant", "mujoco_halfcheetah", "mujoco_walker2d"])
def test_task_configs_list_every_constructor_arg(name):
    from omegaconf import OmegaConf

    from tasks.mujoco.task import MujocoTask

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml"))
    assert cfg["_target_"] == "tasks.mujoco.task.MujocoTask"
    params = set(inspect.signature(MujocoTask.__init__).parameters) - {"self"}
    assert set(cfg) - {"_target_"} == params
    assert cfg["env"] == name.split("_", 1)[1]


def test_build_task_from_config(offline):
    from tasks.base import build_task

    make_dataset("halfcheetah", "smoke", overrides=TINY, progress=False, log=lambda s: None)
    task = build_task("mujoco_halfcheetah", context=8, progress=False)
    assert task.seq_len == 8 and task.d_in == 24
    assert task.default_optimizer["name"] == "adamw" and task.primary_metric == "loss" and not task.higher_is_better


def _make_data_cfg(overrides: list[str]):
    """The config ``python -m tasks.mujoco.make_data <overrides>`` runs with."""
    from hydra import compose, initialize_config_dir

    import tasks.mujoco.make_data  # noqa: F401  (registers the ${repo:} resolver)
    from tasks.base import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("make_data", overrides=overrides)


def test_make_data_cli_rejects_unknown_key():
    from hydra.errors import HydraException

    from tasks.mujoco.make_data import make

    with pytest.raises(HydraException, match="nonsense"):
        _make_data_cfg(["env=ant", "profile=smoke", "nonsense=1"])
    with pytest.raises(HydraException, match="huge"):
        _make_data_cfg(["env=ant", "profile=huge"])
    assert make(_make_data_cfg(["env=robotdog", "profile=smoke"])) == 2


@pytest.mark.slow
def test_make_data_cli_smoke_end_to_end(offline):
    """The real smoke profile (with the committed smoke agent, about 15 s per robot): shards,
    manifest and plot."""
    from tasks.mujoco.make_data import make

    assert make(_make_data_cfg(["env=halfcheetah", "profile=smoke", "progress=false"])) == 0
    ddir = dataset_dir("halfcheetah", "smoke")
    assert ddir.parent.parent.parent == offline
    man = json.loads((ddir / "manifest.json").read_text())
    assert man["complete"] and man["n_traj"] == 32 and man["steps"] == 1000 and (ddir / "plot.png").is_file()
    assert len(list(ddir.glob("shard_*.npz"))) == man["n_shards"]
    assert man["agent"]["source"] == "committed"


def test_committed_paper_ant_agent_loads_and_acts():
    """The 1M-step Ant agent committed under results/ (the paper profile's offline agent) stays
    loadable with its VecNormalize statistics and acts deterministically."""
    from tasks.mujoco.agents import load_sb3_agent
    from tasks.mujoco.envs import robot

    base = pathlib.Path(__file__).resolve().parent.parent / "results" / "mujoco_data" / "ant" / "paper" / "agent" / "ppo-seals-Ant-v1_t1000000_s0"
    agent = load_sb3_agent(base.with_suffix(".zip"), robot("ant"), base.with_name(base.name + "_vecnormalize.pkl"))
    rec = json.loads(base.with_suffix(".json").read_text())
    assert rec["timesteps"] == 1_000_000 and rec["mean_return"] > 2000
    obs, _ = make_env("ant").reset(seed=0)
    a1, a2 = agent.act(obs[None]), agent.act(obs[None])
    assert a1.shape == (1, 8) and np.array_equal(a1, a2) and np.all(np.abs(a1) <= 1.0)


# ------------------------------------------------------------------- committed agents (results/)
COMMITTED = sorted(p for p in (REPO / "results" / "mujoco_data").glob("*/*/agent/ppo-*_t*_s*.json")
                   if p.with_suffix(".zip").exists())


def test_committed_agents_are_there():
    """The smoke and paper agents of the three robots are committed (each with its VecNormalize statistics)."""
    have = {(p.parts[-4], p.parts[-3]) for p in COMMITTED}
    want = {(e, p) for e in ROBOTS for p in ("smoke", "paper")}
    assert want <= have, f"missing committed agents: {sorted(want - have)}"
    no_stats = [p.name for p in COMMITTED if not p.with_name(p.stem + "_vecnormalize.pkl").exists()]
    assert not no_stats, f"committed agents without their VecNormalize statistics: {no_stats}"


@pytest.mark.parametrize("record", COMMITTED, ids=lambda p: f"{p.parts[-4]}-{p.parts[-3]}")
def test_committed_agent_is_found_loads_and_acts_deterministically(record, offline, monkeypatch):
    env, profile = record.parts[-4], record.parts[-3]
    rec = json.loads(record.read_text())

    def no_training(*a, **k):
        raise AssertionError("the committed agent should have been used")

    monkeypatch.setattr(agents_mod, "train_local_agent", no_training)
    agent = resolve_agent(env, timesteps=rec["timesteps"], seed=rec["train_seed"], eval_episodes=rec["eval_episodes"],
                          profile=profile, log=lambda s: None)
    r = agent.record
    assert r["source"] == "committed" and r["profile"] == profile
    assert r["path"] == record.with_suffix(".zip").relative_to(REPO).as_posix()  # repo-relative, no machine paths
    assert r["vecnormalize"] == r["path"].replace(".zip", "_vecnormalize.pkl") and agent.vecnorm is not None
    assert r["sha256"] == rec["sha256"] == agents_mod.sha256_file(REPO / r["path"])
    assert r["mean_return"] == rec["mean_return"] and r["timesteps"] == rec["timesteps"]
    if "weights_sha256" in rec:
        assert r["weights_sha256"] == rec["weights_sha256"]
    # the same observations give the same actions, call after call and whatever the batch
    e = make_env(env)
    obs = np.stack([e.reset(seed=s)[0] for s in range(3)])
    a1, a2 = agent.act(obs), agent.act(obs)
    assert a1.shape == (3, robot(env).action_dim) and np.array_equal(a1, a2) and np.all(np.abs(a1) <= 1.0)
    assert np.array_equal(agent.act(obs[1:2]), a1[1:2])
    noise = np.random.default_rng(0).normal(size=a1.shape)
    assert np.array_equal(agent.act(obs, noise), agent.act(obs, noise))


def test_dataset_prefers_committed_agent_over_hub_and_training(offline, monkeypatch):
    """No user file: the committed smoke agent (its record matches the profile's budget and seed) is
    used before the hub and before training; the manifest records it repo-relative."""
    monkeypatch.delenv("FSB_OFFLINE")

    def not_this(*a, **k):
        raise AssertionError("the committed agent should have been used")

    monkeypatch.setattr(agents_mod, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(agents_mod, "_hub_agent", not_this)
    monkeypatch.setattr(agents_mod, "train_local_agent", not_this)
    settings = {**TINY, "n_traj": 2, "shard_size": 2, "agent_timesteps": 10_000, "agent_seed": 0, "eval_episodes": 4}
    man = make_dataset("halfcheetah", "smoke", overrides=settings, progress=False, log=lambda s: None)
    a = man["agent"]
    rel = "results/mujoco_data/halfcheetah/smoke/agent/ppo-seals-HalfCheetah-v1_t10000_s0.zip"
    assert a["source"] == "committed" and a["path"] == rel and a["trained_as"] == "local"
    text = (dataset_dir("halfcheetah", "smoke") / "manifest.json").read_text()
    assert str(REPO) not in text and str(offline) not in json.dumps(a)
    # an explicit user file still wins over the committed agent (a copy: a user agent's evaluation
    # is cached beside its zip, and tests never write into results/)
    user = offline / "mine.zip"
    shutil.copyfile(REPO / rel, user)
    man2 = make_dataset("halfcheetah", "smoke", root=offline / "other", agent_path=str(user), overrides=settings,
                        progress=False, log=lambda s: None)
    assert man2["agent"]["source"] == "user"
    # another budget or seed: no committed agent, so the chain goes on (hub, then training: both refused here)
    with pytest.raises(AssertionError, match="committed agent should have been used"):
        resolve_agent("halfcheetah", timesteps=10_000, seed=1, profile="smoke", log=lambda s: None)


def _copy_committed(tmp_path, env="halfcheetah", timesteps=128) -> dict[str, pathlib.Path]:
    """A copy of the committed smoke agent of ``env`` under a fake committed root, renamed and
    re-recorded as a ``timesteps``-step agent (so a fallback trains only that many steps)."""
    spec = robot(env)
    src = agents_mod.committed_agent_paths(spec, "smoke", 10_000, 0)
    agents_mod_root = tmp_path / "committed"
    stem = f"ppo-{spec.slug}_t{timesteps}_s0"
    dst = agents_mod_root / env / "smoke" / "agent"
    dst.mkdir(parents=True)
    out = {"zip": dst / f"{stem}.zip", "vecnorm": dst / f"{stem}_vecnormalize.pkl", "record": dst / f"{stem}.json"}
    shutil.copyfile(src["zip"], out["zip"])
    shutil.copyfile(src["vecnorm"], out["vecnorm"])
    rec = json.loads(src["record"].read_text())
    rec.update(timesteps=timesteps, sha256=agents_mod.sha256_file(out["zip"]))
    out["record"].write_text(json.dumps(rec))
    out["root"] = agents_mod_root
    return out


def test_committed_agent_that_does_not_match_its_record_is_not_used(tmp_path, offline, monkeypatch):
    files = _copy_committed(tmp_path)
    monkeypatch.setattr(agents_mod, "COMMITTED_ROOT", files["root"])
    kw = dict(timesteps=128, seed=0, eval_episodes=1, profile="smoke")
    good = resolve_agent("halfcheetah", **kw, log=lambda s: None)
    assert good.record["source"] == "committed" and good.record["path"] == str(files["zip"])  # outside the repo

    data = bytearray(files["zip"].read_bytes())
    data[-30] ^= 0xFF  # one changed byte: the zip no longer has the sha256 of its record
    files["zip"].write_bytes(bytes(data))
    msgs = []
    agent = resolve_agent("halfcheetah", **kw, log=msgs.append)
    assert agent.record["source"] == "local" and agent.record["reused"] is False  # trained (128 steps) instead
    assert any("does not match its record" in m for m in msgs)


def test_committed_agent_without_its_observation_statistics_is_not_used(tmp_path, offline, monkeypatch):
    """An agent trained on VecNormalize'd observations acts on raw ones without its statistics file:
    it is refused with the reason, and the chain goes on (here: a 128-step local agent)."""
    files = _copy_committed(tmp_path)
    monkeypatch.setattr(agents_mod, "COMMITTED_ROOT", files["root"])
    files["vecnorm"].unlink()
    msgs = []
    agent = resolve_agent("halfcheetah", timesteps=128, seed=0, eval_episodes=1, profile="smoke", log=msgs.append)
    assert agent.record["source"] == "local" and agent.record["reused"] is False
    assert any("VecNormalize" in m and "is missing" in m and files["vecnorm"].name in m for m in msgs)


def test_committed_agent_for_other_budget_or_seed_is_not_used(tmp_path, offline, monkeypatch):
    files = _copy_committed(tmp_path)
    monkeypatch.setattr(agents_mod, "COMMITTED_ROOT", files["root"])
    rec = json.loads(files["record"].read_text())
    files["record"].write_text(json.dumps({**rec, "train_seed": 7}))  # the file name says s0, the record s7
    msgs = []
    agent = resolve_agent("halfcheetah", timesteps=128, seed=0, eval_episodes=1, profile="smoke", log=msgs.append)
    assert agent.record["source"] == "local" and any("not 128/0" in m for m in msgs)
    # without a profile the committed agents are not looked at
    files["record"].write_text(json.dumps(rec))
    again = resolve_agent("halfcheetah", timesteps=128, seed=0, eval_episodes=1, log=lambda s: None)
    assert again.record["source"] == "local" and again.record["reused"] is True
