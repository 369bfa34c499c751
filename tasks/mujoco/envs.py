"""The three seals MuJoCo robots of section III, their dimensions, and where data lives.

``seals/<Robot>-v1`` are the fixed-horizon variants of the gymnasium MuJoCo robots used by the
HumanCompatibleAI ``ppo-seals`` agents that the paper cites ([20]): every episode is exactly 1,000
steps (no early termination) and the observation includes the positions, so ``x_t`` is 29-dim for
Ant and 18-dim for HalfCheetah and Walker2d (section III: x_t in R^29, u_t in R^8 for Ant).
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RobotSpec:
    name: str  # short name users type: ant | halfcheetah | walker2d
    env_id: str  # gymnasium id registered by ``import seals``
    state_dim: int
    action_dim: int
    episode_len: int = 1000

    @property
    def hub_repo(self) -> str:  # HumanCompatibleAI/ppo-seals-Ant-v1
        return "HumanCompatibleAI/ppo-" + self.env_id.replace("/", "-")

    @property
    def hub_filename(self) -> str:  # ppo-seals-Ant-v1.zip
        return "ppo-" + self.env_id.replace("/", "-") + ".zip"

    @property
    def slug(self) -> str:  # seals-Ant-v1, safe as a file name
        return self.env_id.replace("/", "-")


ROBOTS: dict[str, RobotSpec] = {
    "ant": RobotSpec("ant", "seals/Ant-v1", 29, 8),
    "halfcheetah": RobotSpec("halfcheetah", "seals/HalfCheetah-v1", 18, 6),
    "walker2d": RobotSpec("walker2d", "seals/Walker2d-v1", 18, 6),
}


def robot(name: str) -> RobotSpec:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in ROBOTS:
        raise ValueError(f"unknown MuJoCo env {name!r}; valid: {', '.join(ROBOTS)}")
    return ROBOTS[key]


def data_root(override: str | os.PathLike | None = None) -> pathlib.Path:
    """``$FSB_DATA`` (default ``<repo>/data``), or ``override`` when given."""
    if override is not None:
        return pathlib.Path(override)
    return pathlib.Path(os.environ.get("FSB_DATA", REPO_ROOT / "data"))


def dataset_dir(env: str, profile: str, root: str | os.PathLike | None = None) -> pathlib.Path:
    return data_root(root) / "mujoco" / robot(env).name / profile


def agents_dir(root: str | os.PathLike | None = None) -> pathlib.Path:
    return data_root(root) / "agents"


def make_env(env: str):
    """One gymnasium env for ``env`` (the passive checker is off: it only slows stepping)."""
    import gymnasium as gym
    import seals  # noqa: F401  (registers the seals/* ids)

    spec = robot(env)
    e = gym.make(spec.env_id, disable_env_checker=True)
    obs_dim = e.observation_space.shape[0]
    act_dim = e.action_space.shape[0]
    if (obs_dim, act_dim) != (spec.state_dim, spec.action_dim):
        raise RuntimeError(
            f"{spec.env_id} has obs {obs_dim} / action {act_dim}, expected {spec.state_dim} / "
            f"{spec.action_dim}: the installed seals/gymnasium/mujoco versions differ from the tested ones"
        )
    return e


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("mujoco", "gymnasium", "seals", "stable-baselines3", "huggingface_hub", "numpy", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


class torch_threads:
    """Run a block with ``n`` torch threads: the tiny PPO policies act in ~1 ms on one thread but
    can take tens of ms with several threads on a busy 2-core machine (thread contention)."""

    def __init__(self, n: int = 1):
        self.n = n

    def __enter__(self):
        import torch

        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.old)
        return False
