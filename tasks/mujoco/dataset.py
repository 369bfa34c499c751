"""Sharded, resumable, checksummed trajectory datasets with a manifest.

Layout of ``$FSB_DATA/mujoco/<env>/<profile>/``::

    manifest.json          env id/version, agent record (source, path, sha256, mean return), seeds,
                           sizes, shapes, dtypes, per-shard sha256 and returns, package versions, timing
    shard_00000.npz ...    states (S, T+1, dx) float32, actions (S, T, du) float32,
                           rewards (S, T) float32, seeds (S,) int64
    plot.png               a few state features over time and the distribution of returns
    norm_stats_val<f>.json normalisation statistics of the training split for val_fraction=f

Shard ``k`` holds trajectories ``k*S .. k*S+S-1`` with reset seeds ``seed + index``. A shard whose
file exists and matches its checksum is never made again; a missing, truncated or corrupted one is
reported with its path and made again on the next :func:`make_dataset`, leaving the others alone.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import time
from typing import Any, Callable

import numpy as np

from tasks.mujoco.agents import Agent, _atomic_write_json, load_sb3_agent, resolve_agent, sha256_file
from tasks.mujoco.envs import REPO_ROOT, dataset_dir, package_versions, robot

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# The settings that decide the bytes of the data; a manifest made with others is refused.
DATA_KEYS = ("n_traj", "steps", "shard_size", "seed", "action_noise")


class DatasetError(RuntimeError):
    """A dataset that cannot be used as it is (wrong environment, other sizes, bad shards)."""


def profile_settings(profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dataset sizes of ``profile`` (``profile.data.mujoco`` in ``conf/profile/<profile>.yaml``)
    with ``overrides`` (checked: an unknown field fails, listing the valid ones)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from tasks.base import CONF_DIR

    valid = sorted(p.stem for p in (CONF_DIR / "profile").glob("*.yaml"))
    if profile not in valid:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(valid)}")
    if GlobalHydra.instance().is_initialized():
        cfg = compose("make_data", overrides=[f"profile={profile}"])
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("make_data", overrides=[f"profile={profile}"])
    out = OmegaConf.to_container(cfg.profile.data.mujoco, resolve=True)
    unknown = set(overrides or {}) - set(out)
    if unknown:
        raise ValueError(f"unknown profile field(s) {sorted(unknown)}; valid: {', '.join(out)}")
    out.update(overrides or {})
    return out


# ----------------------------------------------------------------------------- manifest + shards
def read_manifest(ddir: pathlib.Path) -> dict[str, Any] | None:
    p = pathlib.Path(ddir) / MANIFEST
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise DatasetError(f"{p} is not valid JSON ({e}); delete it to remake the dataset") from e


def check_manifest(man: dict[str, Any], env: str, settings: dict[str, Any] | None, ddir) -> None:
    spec = robot(env)
    if man.get("env_id") != spec.env_id:
        raise DatasetError(
            f"{pathlib.Path(ddir) / MANIFEST} is for {man.get('env_id')!r}, not {spec.env_id!r}: refusing to mix "
            f"environments (point data_dir elsewhere or delete that folder)")
    if man.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{pathlib.Path(ddir) / MANIFEST} has format {man.get('format_version')}, expected {FORMAT_VERSION}")
    if settings is not None:
        # a manifest from before a key existed was made with its default (0: deterministic policy)
        diff = {k: (man["config"].get(k, 0), settings[k]) for k in DATA_KEYS if man["config"].get(k, 0) != settings[k]}
        if diff:
            raise DatasetError(
                f"{pathlib.Path(ddir) / MANIFEST} was made with other settings {{key: (manifest, requested)}} "
                f"{diff}; delete that folder to remake it")


def shard_name(k: int) -> str:
    return f"shard_{k:05d}.npz"


def verify_shards(ddir: pathlib.Path, man: dict[str, Any]) -> list[tuple[int, pathlib.Path, str]]:
    """``(shard index, path, problem)`` for every listed shard that is missing or fails its checksum,
    and for every expected shard the manifest does not list yet."""
    ddir = pathlib.Path(ddir)
    bad = []
    listed = {s["index"]: s for s in man.get("shards", [])}
    for k in range(man["n_shards"]):
        p = ddir / shard_name(k)
        entry = listed.get(k)
        if entry is None:
            bad.append((k, p, "not made yet"))
        elif not p.exists():
            bad.append((k, p, "missing"))
        elif p.stat().st_size != entry["bytes"]:
            bad.append((k, p, f"truncated or changed: {p.stat().st_size} bytes, manifest says {entry['bytes']}"))
        elif sha256_file(p) != entry["sha256"]:
            bad.append((k, p, "checksum mismatch (corrupted)"))
    return bad


def _new_manifest(env: str, profile: str, settings: dict[str, Any], agent: Agent) -> dict[str, Any]:
    spec = robot(env)
    n_shards = math.ceil(settings["n_traj"] / settings["shard_size"])
    T = settings["steps"]
    return {
        "format_version": FORMAT_VERSION,
        "env": spec.name, "env_id": spec.env_id, "env_version": spec.env_id.rsplit("-", 1)[-1],
        "profile": profile, "config": {k: settings[k] for k in settings},
        "agent": agent.record,
        "seeds": {"first": settings["seed"], "count": settings["n_traj"],
                  "rule": ("trajectory i is env.reset(seed=first + i), then the agent's deterministic policy"
                           if not settings["action_noise"] else
                           f"trajectory i is env.reset(seed=first + i), then the agent's stochastic policy: mean + "
                           f"{settings['action_noise']:g} x its std x N(0, 1) from numpy default_rng([first + i, 0x5EED])")},
        "n_traj": settings["n_traj"], "steps": T, "n_shards": n_shards,
        "state_dim": spec.state_dim, "action_dim": spec.action_dim,
        "arrays": {
            "states": {"shape": ["n", T + 1, spec.state_dim], "dtype": "float32", "meaning": "x_0..x_T"},
            "actions": {"shape": ["n", T, spec.action_dim], "dtype": "float32", "meaning": "u_0..u_{T-1}"},
            "rewards": {"shape": ["n", T], "dtype": "float32"},
            "seeds": {"shape": ["n"], "dtype": "int64"},
        },
        "shards": [], "complete": False, "packages": package_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "timing": {},
    }


def _recorded_agent(man: dict[str, Any], env: str) -> Agent | None:
    """The agent a partial dataset was started with, if its file is still there unchanged."""
    rec = man.get("agent") or {}
    path = rec.get("path")
    if not path or not pathlib.Path(path).exists() or sha256_file(path) != rec.get("sha256"):
        return None
    agent = load_sb3_agent(path, robot(env), rec.get("vecnormalize"))
    agent.record = rec
    return agent


def make_dataset(env: str, profile: str = "smoke", *, root=None, agent_path: str | None = None, use_hub: bool = True,
                 overrides: dict[str, Any] | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Make (or finish, or repair) the dataset of ``env`` at ``profile`` and return its manifest."""
    from tasks.mujoco.rollout import rollout

    spec = robot(env)
    settings = profile_settings(profile, overrides)
    ddir = dataset_dir(env, profile, root)
    ddir.mkdir(parents=True, exist_ok=True)
    man = read_manifest(ddir)
    if man is not None:
        check_manifest(man, env, settings, ddir)
        todo = verify_shards(ddir, man)
        for k, p, why in todo:
            if why != "not made yet":
                log(f"[data] bad shard {p}: {why}; it will be made again")
        if not todo and man.get("complete") and (ddir / "plot.png").exists():
            log(f"[data] {ddir} is complete and verified ({man['n_traj']} x {man['steps']})")
            return man
    else:
        todo = None

    t0 = time.time()
    agent = None
    if man is not None and (man.get("shards") or agent_path is None):
        agent = _recorded_agent(man, env)
        if agent is None and man.get("shards"):
            log("[data] the agent recorded in the manifest is gone or changed; resolving one again")
    if agent is None:
        agent = resolve_agent(env, agent_path=agent_path, timesteps=settings["agent_timesteps"],
                              seed=settings["agent_seed"], eval_episodes=settings["eval_episodes"],
                              use_hub=use_hub, root=root, profile=profile, log=log)
    agent_s = time.time() - t0
    if man is None:
        man = _new_manifest(env, profile, settings, agent)
        todo = [(k, ddir / shard_name(k), "not made yet") for k in range(man["n_shards"])]
    elif man.get("shards") and agent.record.get("sha256") != man["agent"].get("sha256"):
        raise DatasetError(
            f"{ddir} was started with agent {man['agent'].get('path')} (sha256 {man['agent'].get('sha256')}) but "
            f"that agent is not available now; delete {ddir} to remake the whole dataset with the current agent")
    else:
        man["agent"] = agent.record
    man["timing"]["agent_seconds"] = round(agent_s, 1)
    _atomic_write_json(ddir / MANIFEST, man)

    S, N, T, seed0 = settings["shard_size"], settings["n_traj"], settings["steps"], settings["seed"]
    t1 = time.time()
    steps_done = 0
    for i, (k, p, _why) in enumerate(todo):
        lo, hi = k * S, min((k + 1) * S, N)
        seeds = list(range(seed0 + lo, seed0 + hi))
        out = rollout(agent, env, seeds, T, n_envs=settings["n_envs"], progress=progress,
                      desc=f"{spec.env_id} shard {i + 1}/{len(todo)}", action_noise=settings["action_noise"])
        tmp = p.with_name(p.stem + ".tmp.npz")
        np.savez(tmp, **out)
        os.replace(tmp, p)
        steps_done += (hi - lo) * T
        returns = out["rewards"].astype(np.float64).sum(1)
        entry = {"index": k, "file": p.name, "trajectories": [lo, hi], "seeds": [seeds[0], seeds[-1] + 1],
                 "sha256": sha256_file(p), "bytes": p.stat().st_size,
                 "returns": [round(float(r), 3) for r in returns]}
        man["shards"] = [s for s in man["shards"] if s["index"] != k] + [entry]
        man["shards"].sort(key=lambda s: s["index"])
        _atomic_write_json(ddir / MANIFEST, man)
    roll_s = time.time() - t1
    if steps_done:
        man["timing"].update({"rollout_seconds": round(roll_s, 1), "rollout_steps": steps_done,
                              "steps_per_second": round(steps_done / max(roll_s, 1e-9), 1)})
    all_returns = [r for s in man["shards"] for r in s["returns"]]
    man["data_returns"] = {"mean": float(np.mean(all_returns)), "std": float(np.std(all_returns)),
                           "min": float(np.min(all_returns)), "max": float(np.max(all_returns))}
    man["bytes"] = sum(s["bytes"] for s in man["shards"])
    man["complete"] = True
    _atomic_write_json(ddir / MANIFEST, man)
    plot_dataset(ddir, man)
    log(f"[data] {ddir}: {N} x {T} steps, {man['bytes'] / 1e6:.1f} MB, agent {agent.record['source']} "
        f"(mean return {agent.record.get('mean_return', float('nan')):.1f}); data mean return "
        f"{man['data_returns']['mean']:.1f}")
    return man


# ----------------------------------------------------------------------------------- loading
def load_dataset(env: str, profile: str, root=None, verify: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All shards concatenated in trajectory order, and the manifest. Bad shards raise
    :class:`DatasetError` naming their paths (``make_dataset`` remakes just those)."""
    ddir = dataset_dir(env, profile, root)
    man = read_manifest(ddir)
    if man is None:
        raise DatasetError(f"no dataset at {ddir}; make it with python -m tasks.mujoco.make_data env={env} profile={profile}")
    check_manifest(man, env, None, ddir)
    if verify:
        bad = verify_shards(ddir, man)
        if bad:
            lines = "\n".join(f"  {p}: {why}" for _, p, why in bad)
            raise DatasetError(f"{len(bad)} bad shard(s) in {ddir}:\n{lines}\n"
                               f"run python -m tasks.mujoco.make_data env={env} profile={profile} to remake only these")
    parts: dict[str, list[np.ndarray]] = {"states": [], "actions": [], "rewards": [], "seeds": []}
    for s in man["shards"]:
        with np.load(ddir / s["file"]) as z:
            for key in parts:
                parts[key].append(z[key])
    return {k: np.concatenate(v) for k, v in parts.items()}, man


def split_indices(n: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split by whole trajectories: the last ``round(n * val_fraction)`` (at least 1 when
    ``val_fraction > 0``) are validation. Seeds are i.i.d., so the last ones are as good as any."""
    if not 0 <= val_fraction < 1:
        raise ValueError("val_fraction must be in [0, 1)")
    n_val = 0 if val_fraction == 0 else min(n - 1, max(1, round(n * val_fraction)))
    return np.arange(n - n_val), np.arange(n - n_val, n)


def norm_stats(states: np.ndarray, actions: np.ndarray) -> dict[str, list[float]]:
    """Per-feature mean and std (float64; std floored at 1e-6 so constant features stay finite)."""
    xs = states.reshape(-1, states.shape[-1]).astype(np.float64)
    us = actions.reshape(-1, actions.shape[-1]).astype(np.float64)
    return {"state_mean": xs.mean(0).tolist(), "state_std": np.maximum(xs.std(0), 1e-6).tolist(),
            "action_mean": us.mean(0).tolist(), "action_std": np.maximum(us.std(0), 1e-6).tolist()}


def train_norm_stats(env: str, profile: str, data: dict[str, np.ndarray], val_fraction: float, root=None) -> dict[str, Any]:
    """Statistics of the training split only, stored beside the data (``norm_stats_val<f>.json``)."""
    ddir = dataset_dir(env, profile, root)
    train_idx, val_idx = split_indices(len(data["states"]), val_fraction)
    path = ddir / f"norm_stats_val{val_fraction:g}.json"
    man_sha = sha256_file(ddir / MANIFEST)
    try:
        rec = json.loads(path.read_text())
        if rec.get("manifest_sha256") == man_sha:
            return rec
    except (OSError, ValueError):
        pass
    rec = {**norm_stats(data["states"][train_idx], data["actions"][train_idx]),
           "train_trajectories": [int(train_idx[0]), int(train_idx[-1]) + 1],
           "val_trajectories": [int(val_idx[0]), int(val_idx[-1]) + 1] if len(val_idx) else [],
           "val_fraction": val_fraction, "computed_on": "training split only", "manifest_sha256": man_sha}
    _atomic_write_json(path, rec)
    return rec


# ---------------------------------------------------------------------------------------- plot
def plot_dataset(ddir: pathlib.Path, man: dict[str, Any], n_traj: int = 3) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ddir = pathlib.Path(ddir)
    with np.load(ddir / man["shards"][0]["file"]) as z:
        states = z["states"][:n_traj]
        seeds = z["seeds"][:n_traj]
    # seals keeps the root position in the observation: x_t = [qpos, qvel], qpos[0] is the root x
    # position (the robot walking shows as a rising line), qpos[1] the root y (Ant) or height.
    dx = states.shape[-1]
    n_q = {"ant": 15, "halfcheetah": 9, "walker2d": 9}[man["env"]]
    feats = [(0, "x_t[0] (root x position)"), (1, "x_t[1] (root y / height)"), (min(n_q - 1, dx - 1), f"x_t[{n_q - 1}] (last joint angle)"),
             (n_q, f"x_t[{n_q}] (root x velocity)")]
    fig, axes = plt.subplots(1, len(feats) + 1, figsize=(4 * (len(feats) + 1), 3.2))
    for ax, (j, label) in zip(axes, feats):
        for i in range(len(states)):
            ax.plot(states[i, :, j], lw=0.8, label=f"seed {seeds[i]}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    rets = [r for s in man["shards"] for r in s["returns"]]
    axes[-1].hist(rets, bins=min(30, max(5, len(rets) // 3)))
    axes[-1].set_title(f"returns over {man['steps']} steps (n={len(rets)})", fontsize=9)
    a = man["agent"]
    noise = man["config"].get("action_noise", 0)
    policy = f"stochastic policy (action_noise {noise:g})" if noise else "deterministic policy"
    fig.suptitle(f"{man['env_id']} [{man['profile']}] agent: {a.get('source')} "
                 f"(eval mean return {a.get('mean_return', float('nan')):.0f}, deterministic); data: {policy}",
                 fontsize=10)
    fig.tight_layout()
    out = ddir / "plot.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
