"""PPO agents that drive the robots: a user file, a committed agent, the hub, or one trained here.

Order of preference (:func:`resolve_agent`):

1. ``agent_path`` given by the user (``agent.path=...``): that Stable-Baselines3 zip, always.
   (An explicit request beats the default chain; without it the chain below runs.)
2. The agent committed with the repository for the dataset profile (``profile=``):
   ``results/mujoco_data/<env>/<profile>/agent/ppo-<slug>_t<timesteps>_s<seed>.zip`` with its
   ``_vecnormalize.pkl`` and ``.json`` record, used only when the record is for the requested
   ``timesteps`` and ``seed`` and its sha256 is that of the zip. Training the same agent again on
   another machine can give another agent (another CPU rounds differently), and the data made with
   it would differ; the committed file is the same everywhere. Its record says ``source: committed``
   and gives repo-relative paths.
3. The hub's ``HumanCompatibleAI/ppo-seals-<Robot>-v1`` agent the paper used ([20]), downloaded
   into ``$FSB_DATA/agents/hub`` with ``huggingface_hub`` together with ``vec_normalize.pkl`` when the
   repo has one -- only when a quick reachability check passes (``FSB_OFFLINE=1`` or
   ``HF_HUB_OFFLINE=1`` skip it; ``FSB_HUB_DIR=<dir>`` reads ``<dir>/<repo>/<file>`` instead of the
   network, for mirrors and tests).
4. A PPO agent trained here with Stable-Baselines3 and the tuned hyperparameters published with
   the ``ppo-seals`` agents (:data:`TUNED_PPO`), for ``timesteps`` set by the profile; saved with
   its VecNormalize statistics and mean evaluation return in ``$FSB_DATA/agents/local`` and
   reused on the next call.

Every agent comes with a JSON-able ``record`` (source, path, sha256, mean return, seeds) that the
dataset manifest stores. ``sha256`` is that of the zip file, which also holds save times and the
machine's OS string; ``weights_sha256`` (of the policy weights inside it) is the same for the same
weights on every machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
import socket
import sys
import threading
import time
import types
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.mujoco.envs import REPO_ROOT, RobotSpec, agents_dir, make_env, robot, torch_threads

HUB_HOST = "huggingface.co"
# Agents committed with the repository: COMMITTED_ROOT/<env>/<profile>/agent/ (tests point it elsewhere).
COMMITTED_ROOT = REPO_ROOT / "results" / "mujoco_data"

# Tuned PPO hyperparameters published on the model cards of the seals PPO agents (RL Zoo tuning for
# seals/*-v0; hub repos HumanCompatibleAI/ppo-seals-Walker2d-v0 and ernestumorga/ppo-seals-{Ant,
# HalfCheetah}-v0, the same settings as the HumanCompatibleAI agents). One deviation: those agents
# normalise observations inside the policy with ``imitation``'s NormalizeFeaturesExtractor (Ant,
# Walker2d); here every robot uses SB3's VecNormalize(norm_obs=True) instead, so no ``imitation``
# dependency is needed to train or load a local agent.
TUNED_PPO: dict[str, dict[str, Any]] = {
    "ant": dict(
        batch_size=16, clip_range=0.3, ent_coef=3.1441389214159857e-06, gae_lambda=0.8, gamma=0.995,
        learning_rate=0.00017959211641976886, max_grad_norm=0.9, n_epochs=10, n_steps=2048,
        vf_coef=0.4351450387648799, net_arch=[64, 64], activation="tanh",
    ),
    "halfcheetah": dict(
        batch_size=64, clip_range=0.1, ent_coef=3.794797423594763e-06, gae_lambda=0.95, gamma=0.95,
        learning_rate=0.0003286871805949382, max_grad_norm=0.8, n_epochs=5, n_steps=512,
        vf_coef=0.11483689492120866, net_arch=[64, 64], activation="tanh",
    ),
    "walker2d": dict(
        batch_size=8, clip_range=0.4, ent_coef=0.00013057334805552262, gae_lambda=0.92, gamma=0.98,
        learning_rate=3.791707778339674e-05, max_grad_norm=0.6, n_epochs=5, n_steps=2048,
        vf_coef=0.6167177795726859, net_arch=[256, 256], activation="relu",
    ),
}
TUNED_PPO_SOURCE = (
    "RL Zoo tuned PPO hyperparameters for seals/*-v0 as listed on the Hugging Face model cards "
    "HumanCompatibleAI/ppo-seals-Walker2d-v0, ernestumorga/ppo-seals-Ant-v0, "
    "ernestumorga/ppo-seals-HalfCheetah-v0 (1e6 timesteps there)"
)
EVAL_SEED_OFFSET = 1_000_000_000  # evaluation episodes use seeds far from the data seeds


@dataclass
class Agent:
    policy: Any  # an SB3 ActorCriticPolicy
    vecnorm: Any | None  # an SB3 VecNormalize (statistics only) or None
    record: dict[str, Any] = field(default_factory=dict)

    def act(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Actions for a batch of raw observations ``(B, state_dim)``.

        Without ``noise``: the deterministic policy (the Gaussian's mean). With ``noise`` (standard
        normal draws ``(B, action_dim)``, drawn by the caller from a per-trajectory generator): the
        mean plus ``noise`` times the policy's own standard deviation, i.e. a sample from the
        stochastic policy that depends only on the caller's generator.

        The policy runs on one row at a time: a batched matrix product rounds a row differently
        depending on the batch size and the row's position, and the chaotic dynamics amplify that
        (~5e-5 after 1,000 Ant steps). Row by row, a trajectory depends only on its seed and the agent.
        """
        import torch

        x = obs.astype(np.float32)
        if self.vecnorm is not None:
            x = self.vecnorm.normalize_obs(x)
        with torch.no_grad():
            t = torch.as_tensor(x, dtype=torch.float32).reshape(-1, x.shape[-1])
            act = torch.cat([self.policy._predict(t[i:i + 1], deterministic=True) for i in range(len(t))])
            act = act.numpy().reshape(len(t), -1)
            if noise is not None:
                log_std = getattr(self.policy, "log_std", None)
                if log_std is None:
                    raise ValueError("stochastic rollouts need a Gaussian policy (an SB3 policy with log_std)")
                std = log_std.detach().exp().numpy().astype(np.float32)
                act = act + np.asarray(noise, np.float32).reshape(act.shape) * std
        space = self.policy.action_space
        return np.clip(act.reshape(len(t), *space.shape), space.low, space.high)


# ------------------------------------------------------------------------------------ helpers
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def weights_sha256(zip_path: str | os.PathLike) -> str | None:
    """sha256 of the policy weights (``policy.pth``) inside an SB3 zip: unlike the zip's own sha256
    it does not depend on when or on which OS the agent was saved. None if the zip has no such member."""
    import zipfile

    try:
        with zipfile.ZipFile(zip_path) as z:
            return hashlib.sha256(z.read("policy.pth")).hexdigest()
    except (KeyError, OSError, zipfile.BadZipFile):
        return None


def _atomic_write_json(path: pathlib.Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def offline_forced() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return (os.environ.get("FSB_OFFLINE", "").lower() in truthy
            or os.environ.get("HF_HUB_OFFLINE", "").lower() in truthy)


def hub_reachable(host: str = HUB_HOST, timeout: float = 2.0) -> bool:
    """A fast check (DNS then a TCP connect, ``timeout`` each) so an offline machine does not wait
    for ``huggingface_hub``'s retries. ``FSB_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` answer False at once."""
    if offline_forced():
        return False
    result: dict[str, Any] = {}

    def lookup():
        try:
            result["addr"] = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        except OSError as e:
            result["err"] = e

    t = threading.Thread(target=lookup, daemon=True)
    t.start()
    t.join(timeout)
    if "addr" not in result:
        return False
    family, socktype, proto, _, sockaddr = result["addr"][0]
    try:
        with socket.socket(family, socktype, proto) as s:
            s.settimeout(timeout)
            s.connect(sockaddr)
        return True
    except OSError:
        return False


# ------------------------------------------- loading SB3 zips that reference ``imitation`` classes
def _install_imitation_shim() -> None:
    """The hub's seals agents pickle ``imitation.policies.base.NormalizeFeaturesExtractor`` (with
    ``imitation.util.networks.RunningNorm``) into their policy kwargs. When the ``imitation``
    package is absent, register small compatible classes under those module names so the zip loads.
    In evaluation mode they compute ``(x - running_mean) / sqrt(running_var + eps)``."""
    try:
        import imitation.policies.base  # noqa: F401
        return
    except ImportError:
        pass
    if "imitation.policies.base" in sys.modules:
        return
    import torch
    from torch import nn
    from stable_baselines3.common.torch_layers import FlattenExtractor

    class RunningNorm(nn.Module):
        def __init__(self, num_features: int, eps: float = 1e-5):
            super().__init__()
            self.num_features, self.eps = num_features, eps
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("count", torch.tensor(0))

        def forward(self, x):
            if self.training:  # running mean/variance over all batches seen (Chan et al. update)
                with torch.no_grad():
                    bm, bv, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
                    tot = self.count + n
                    delta = bm - self.running_mean
                    self.running_mean += delta * n / tot
                    m2 = self.running_var * self.count + bv * n + delta ** 2 * self.count * n / tot
                    self.running_var = m2 / tot
                    self.count += n
            return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps)

    class NormalizeFeaturesExtractor(FlattenExtractor):
        def __init__(self, observation_space, normalize_class=RunningNorm):
            super().__init__(observation_space)
            self.normalize = normalize_class(self.features_dim)

        def forward(self, observations):
            return self.normalize(super().forward(observations))

    names = ["imitation", "imitation.policies", "imitation.policies.base", "imitation.util",
             "imitation.util.networks"]
    mods = {n: types.ModuleType(n) for n in names}
    RunningNorm.__module__, RunningNorm.__qualname__ = "imitation.util.networks", "RunningNorm"
    NormalizeFeaturesExtractor.__module__ = "imitation.policies.base"
    NormalizeFeaturesExtractor.__qualname__ = "NormalizeFeaturesExtractor"
    mods["imitation.util.networks"].RunningNorm = RunningNorm
    mods["imitation.policies.base"].NormalizeFeaturesExtractor = NormalizeFeaturesExtractor
    for n, m in mods.items():
        m.__dict__["__fsb_shim__"] = True
        sys.modules.setdefault(n, m)


def load_sb3_agent(zip_path: str | os.PathLike, spec: RobotSpec, vecnorm_path: str | os.PathLike | None = None) -> Agent:
    """Load an SB3 PPO zip (and VecNormalize statistics) and check it fits ``spec``."""
    from stable_baselines3 import PPO

    _install_imitation_shim()
    env = make_env(spec.name)
    const = lambda _: 0.0  # noqa: E731  (schedules are not needed to act)
    custom = {
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "learning_rate": 0.0, "lr_schedule": const, "clip_range": const, "clip_range_vf": None,
    }
    env.close()
    try:
        model = PPO.load(str(zip_path), device="cpu", custom_objects=custom)
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"could not load the SB3 PPO agent {zip_path}: {type(e).__name__}: {e}") from e
    policy = model.policy
    policy.set_training_mode(False)
    vecnorm = None
    if vecnorm_path is not None and pathlib.Path(vecnorm_path).exists():
        with open(vecnorm_path, "rb") as f:
            try:
                vecnorm = pickle.load(f)
            except Exception as e:  # noqa: BLE001
                raise RuntimeError(f"could not read VecNormalize statistics {vecnorm_path}: {e}") from e
        vecnorm.training = False
        vecnorm.norm_reward = False
    return Agent(policy, vecnorm, {})


# ------------------------------------------------------------------------------------ evaluation
def evaluate(agent: Agent, env: str, episodes: int, n_envs: int = 8) -> dict[str, Any]:
    from tasks.mujoco.rollout import rollout

    spec = robot(env)
    seeds = [EVAL_SEED_OFFSET + i for i in range(episodes)]
    out = rollout(agent, env, seeds, spec.episode_len, n_envs=n_envs, progress=False)
    returns = out["rewards"].astype(np.float64).sum(1)
    return {"mean_return": float(returns.mean()), "std_return": float(returns.std()),
            "eval_episodes": episodes, "eval_seeds": [seeds[0], seeds[-1] + 1]}


# ------------------------------------------------------------------------------------ sources
def _hub_agent(spec: RobotSpec, cache: pathlib.Path, eval_episodes: int) -> Agent:
    hub_dir = os.environ.get("FSB_HUB_DIR")
    files: dict[str, pathlib.Path | None] = {}
    revision = None
    if hub_dir:
        base = pathlib.Path(hub_dir) / spec.hub_repo
        zip_path = base / spec.hub_filename
        if not zip_path.exists():
            raise FileNotFoundError(f"{zip_path} not found in FSB_HUB_DIR")
        files["zip"] = zip_path
        vn = base / "vec_normalize.pkl"
        files["vecnorm"] = vn if vn.exists() else None
        where = f"FSB_HUB_DIR={hub_dir}"
    else:
        from huggingface_hub import hf_hub_download, list_repo_files

        names = list_repo_files(spec.hub_repo)
        files["zip"] = pathlib.Path(hf_hub_download(spec.hub_repo, spec.hub_filename, cache_dir=cache / "hub"))
        files["vecnorm"] = None
        if "vec_normalize.pkl" in names:
            files["vecnorm"] = pathlib.Path(hf_hub_download(spec.hub_repo, "vec_normalize.pkl", cache_dir=cache / "hub"))
        parts = files["zip"].parts
        revision = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
        where = f"https://huggingface.co/{spec.hub_repo}"
    agent = load_sb3_agent(files["zip"], spec, files["vecnorm"])
    agent.record = {
        "source": "hub", "repo": spec.hub_repo, "file": spec.hub_filename, "revision": revision,
        "where": where, "path": str(files["zip"]), "sha256": sha256_file(files["zip"]),
        "vecnormalize": str(files["vecnorm"]) if files["vecnorm"] else None,
    }
    agent.record.update(_cached_eval(agent, spec, files["zip"], eval_episodes))
    return agent


def _user_agent(spec: RobotSpec, path: str, eval_episodes: int) -> Agent:
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"agent.path={path} does not exist")
    vn = None
    for cand in (p.with_name(p.stem + "_vecnormalize.pkl"), p.parent / "vec_normalize.pkl"):
        if cand.exists():
            vn = cand
            break
    agent = load_sb3_agent(p, spec, vn)
    agent.record = {"source": "user", "path": str(p.resolve()), "sha256": sha256_file(p),
                    "vecnormalize": str(vn) if vn else None}
    agent.record.update(_cached_eval(agent, spec, p, eval_episodes))
    return agent


def _cached_eval(agent: Agent, spec: RobotSpec, zip_path: pathlib.Path, episodes: int) -> dict[str, Any]:
    """Mean return of an agent, cached beside it (keyed by its sha256) so it is measured once."""
    cache = zip_path.with_name(zip_path.stem + "_eval.json")
    sha = sha256_file(zip_path)
    try:
        rec = json.loads(cache.read_text())
        if rec.get("sha256") == sha and rec.get("eval_episodes", 0) >= episodes:
            return {k: v for k, v in rec.items() if k != "sha256"}
    except (OSError, ValueError):
        pass
    rec = evaluate(agent, spec.name, episodes)
    try:
        _atomic_write_json(cache, {**rec, "sha256": sha})
    except OSError:  # a read-only hub cache or user folder: just do not cache
        pass
    return rec


class _TqdmCallback:
    """SB3 callback drawing a tqdm bar over environment steps."""

    def __new__(cls, total: int, desc: str):
        from stable_baselines3.common.callbacks import BaseCallback
        from tqdm.auto import tqdm

        class _CB(BaseCallback):
            def _on_training_start(self):
                self.bar = tqdm(total=total, desc=desc, unit="step", mininterval=2.0)

            def _on_step(self):
                self.bar.update(self.training_env.num_envs)
                return True

            def _on_training_end(self):
                self.bar.close()

        return _CB()


def local_agent_paths(spec: RobotSpec, timesteps: int, seed: int, root=None) -> dict[str, pathlib.Path]:
    base = agents_dir(root) / "local"
    stem = f"ppo-{spec.slug}_t{timesteps}_s{seed}"
    return {"zip": base / f"{stem}.zip", "vecnorm": base / f"{stem}_vecnormalize.pkl", "record": base / f"{stem}.json"}


def committed_agent_paths(spec: RobotSpec, profile: str, timesteps: int, seed: int) -> dict[str, pathlib.Path]:
    """Where the agent committed for ``profile`` lives (same file names as a local agent)."""
    base = pathlib.Path(COMMITTED_ROOT) / spec.name / profile / "agent"
    stem = f"ppo-{spec.slug}_t{timesteps}_s{seed}"
    return {"zip": base / f"{stem}.zip", "vecnorm": base / f"{stem}_vecnormalize.pkl", "record": base / f"{stem}.json"}


def _repo_relative(path: pathlib.Path) -> str:
    """``path`` relative to the repository when it lies inside it (manifests then hold no
    machine-specific absolute paths), else absolute."""
    p = pathlib.Path(path).resolve()
    try:
        return p.relative_to(REPO_ROOT.resolve()).as_posix()
    except ValueError:
        return str(p)


def _committed_agent(spec: RobotSpec, profile: str, timesteps: int, seed: int, eval_episodes: int,
                     log=print) -> Agent | None:
    """The committed agent of ``profile`` for ``timesteps``/``seed``, or None (with the reason logged
    when there is a file that cannot be used)."""
    paths = committed_agent_paths(spec, profile, timesteps, seed)
    if not paths["zip"].exists():
        return None
    where = _repo_relative(paths["zip"])
    try:
        rec = json.loads(paths["record"].read_text())
    except (OSError, ValueError) as e:
        log(f"[agent] committed agent {where} has no readable record ({type(e).__name__}: {e}); not using it")
        return None
    if (rec.get("timesteps"), rec.get("train_seed")) != (timesteps, seed):
        log(f"[agent] committed agent {where}: its record is for timesteps={rec.get('timesteps')} "
            f"seed={rec.get('train_seed')}, not {timesteps}/{seed}; not using it")
        return None
    sha = sha256_file(paths["zip"])
    if rec.get("sha256") != sha:
        log(f"[agent] committed agent {where} does not match its record (sha256 {sha[:12]}..., record says "
            f"{str(rec.get('sha256'))[:12]}...); not using it")
        return None
    vecnorm = paths["vecnorm"] if paths["vecnorm"].exists() else None
    if vecnorm is None and "VecNormalize" in str(rec.get("obs_normalization", "")):
        # trained on normalised observations: without its statistics it would act on raw ones
        log(f"[agent] committed agent {where} was trained with {rec['obs_normalization']} but "
            f"{_repo_relative(paths['vecnorm'])} is missing; not using it")
        return None
    agent = load_sb3_agent(paths["zip"], spec, vecnorm)
    record = {k: v for k, v in rec.items() if k not in ("path", "vecnormalize", "source", "reused")}
    record.update({
        "source": "committed", "trained_as": rec.get("source", "local"), "profile": profile,
        "path": where, "vecnormalize": _repo_relative(vecnorm) if vecnorm else None,
        "sha256": sha, "weights_sha256": weights_sha256(paths["zip"]),
    })
    if "mean_return" not in record or record.get("eval_episodes", 0) < eval_episodes:
        record.update(evaluate(agent, spec.name, eval_episodes))  # in memory: results/ is not written
    agent.record = record
    return agent


def _local_agent(spec: RobotSpec, timesteps: int, seed: int, eval_episodes: int, root=None) -> Agent:
    paths = local_agent_paths(spec, timesteps, seed, root)
    if paths["zip"].exists() and paths["record"].exists():
        rec = json.loads(paths["record"].read_text())
        if rec.get("sha256") == sha256_file(paths["zip"]):
            agent = load_sb3_agent(paths["zip"], spec, paths["vecnorm"])
            agent.record = {**rec, "reused": True}
            return agent
        warnings.warn(f"cached agent {paths['zip']} does not match its record; training again")
    agent = train_local_agent(spec, timesteps, seed, paths)
    agent.record.update(evaluate(agent, spec.name, eval_episodes))
    agent.record["sha256"] = sha256_file(paths["zip"])
    agent.record["weights_sha256"] = weights_sha256(paths["zip"])
    _atomic_write_json(paths["record"], agent.record)
    agent.record = {**agent.record, "reused": False}
    return agent


def train_local_agent(spec: RobotSpec, timesteps: int, seed: int, paths: dict[str, pathlib.Path]) -> Agent:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    hp = dict(TUNED_PPO[spec.name])
    arch = hp.pop("net_arch")
    act_fn = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[hp.pop("activation")]
    # PPO needs at least one full rollout buffer; tiny budgets (tests) shrink it.
    hp["n_steps"] = max(8, min(hp["n_steps"], timesteps))
    hp["batch_size"] = min(hp["batch_size"], hp["n_steps"])
    venv = DummyVecEnv([lambda: make_env(spec.name)])
    venv.seed(seed)
    venv = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=hp["gamma"])
    model = PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0,
                policy_kwargs=dict(net_arch=dict(pi=arch, vf=arch), activation_fn=act_fn), **hp)
    t0 = time.time()
    with torch_threads(1):
        model.learn(total_timesteps=timesteps, callback=_TqdmCallback(timesteps, f"train PPO {spec.env_id}"))
    train_s = time.time() - t0
    paths["zip"].parent.mkdir(parents=True, exist_ok=True)
    model.save(str(paths["zip"]))
    venv.training = False
    venv.norm_reward = False
    venv.save(str(paths["vecnorm"]))
    policy = model.policy
    policy.set_training_mode(False)
    record = {
        "source": "local", "path": str(paths["zip"]), "vecnormalize": str(paths["vecnorm"]),
        "timesteps": timesteps, "train_seed": seed, "train_seconds": round(train_s, 1),
        "hyperparameters": {**TUNED_PPO[spec.name], "n_steps": hp["n_steps"], "batch_size": hp["batch_size"]},
        "hyperparameters_source": TUNED_PPO_SOURCE, "obs_normalization": "VecNormalize(norm_obs=True)",
    }
    return Agent(policy, venv, record)


def resolve_agent(env: str, *, agent_path: str | None = None, timesteps: int = 10_000, seed: int = 0,
                  eval_episodes: int = 4, use_hub: bool = True, root=None, profile: str | None = None,
                  log=print) -> Agent:
    """The agent for ``env``: user file, else the agent committed for ``profile`` (when its record
    is for ``timesteps``/``seed`` and matches its sha256), else hub (if reachable), else a
    cached/trained local one."""
    spec = robot(env)
    cache = agents_dir(root)
    if agent_path:
        log(f"[agent] loading user agent {agent_path}")
        return _user_agent(spec, agent_path, eval_episodes)
    if profile is not None:
        agent = _committed_agent(spec, profile, timesteps, seed, eval_episodes, log=log)
        if agent is not None:
            log(f"[agent] using the committed agent {agent.record['path']} "
                f"(mean return {agent.record['mean_return']:.1f} over {agent.record['eval_episodes']} episodes)")
            return agent
    if use_hub:
        t0 = time.time()
        if os.environ.get("FSB_HUB_DIR") or hub_reachable():
            try:
                log(f"[agent] fetching {spec.hub_repo} from the hub")
                return _hub_agent(spec, cache, eval_episodes)
            except Exception as e:  # noqa: BLE001  (fall back, but say why)
                log(f"[agent] hub agent unavailable ({type(e).__name__}: {e}); training locally instead")
        else:
            os.environ["HF_HUB_OFFLINE"] = "1"
            log(f"[agent] hub unreachable ({time.time() - t0:.2f}s check); using a local PPO agent")
    agent = _local_agent(spec, timesteps, seed, eval_episodes, root)
    verb = "reusing cached" if agent.record.get("reused") else "trained"
    log(f"[agent] {verb} local PPO agent {agent.record['path']} "
        f"(mean return {agent.record['mean_return']:.1f} over {agent.record['eval_episodes']} episodes)")
    return agent
