"""Next-state prediction on MuJoCo trajectories (section III).

Inputs are ``[x_t, u_t]`` (37 dims for Ant, 24 for HalfCheetah/Walker2d), targets ``x_{t+1}``
(29 / 18 dims), over windows of ``context`` consecutive steps of one trajectory. States and actions
are normalised per feature with the mean and std of the *training* trajectories only. The loss is
the paper's: half the squared Euclidean distance between predicted and true (normalised) next
state, averaged over the scored positions, L = mean_t 1/2 ||x^_{t+1} - x_{t+1}||^2.

Input noise (ablation tables VIII-X, "0.1/0.1 means Gaussian noise with a standard deviation of
0.1 is applied to 10% of the data points"): a data point is one time step, so each step of a
training window independently, with probability ``noise_freq``, gets N(0, noise_std^2) noise on
every input feature (normalised units). Targets and validation data are never noised.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterator

import numpy as np
import torch

from tasks.base import Batch, Task
from tasks.mujoco.dataset import (
    DatasetError, load_dataset, make_dataset, read_manifest, split_indices, train_norm_stats, verify_shards,
)
from tasks.mujoco.envs import dataset_dir, robot


class MujocoTask(Task):
    kind = "continuous"
    primary_metric = "loss"
    higher_is_better = False
    # The paper does not give the optimiser of the robotics runs; AdamW at 1e-3 is our choice for
    # ~0.5M-parameter models on normalised regression targets (override with optimizer.lr=...).
    default_optimizer = {"name": "adamw", "lr": 1e-3}
    default_batch_size = 32
    default_steps = 2000

    def __init__(self, env: str = "ant", data_profile: str = "smoke", context: int = 512, val_fraction: float = 0.1,
                 noise_std: float = 0.0, noise_freq: float = 0.0, data_dir: str | None = None,
                 agent_path: str | None = None, progress: bool = True):
        spec = robot(env)
        profile = data_profile
        self.env, self.profile, self.spec = spec.name, profile, spec
        self.name = f"mujoco_{spec.name}"
        self.context = self.seq_len = int(context)
        self.val_fraction = float(val_fraction)
        self.noise_std, self.noise_freq = float(noise_std), float(noise_freq)
        if self.noise_std < 0 or not 0 <= self.noise_freq <= 1:
            raise ValueError("noise_std must be >= 0 and noise_freq in [0, 1]")
        self.data_root = data_dir
        self.d_in = spec.state_dim + spec.action_dim
        self.d_out = spec.state_dim
        self.data_path = dataset_dir(spec.name, profile, data_dir)

        man = read_manifest(self.data_path)
        if man is None or not man.get("complete") or verify_shards(self.data_path, man):
            # data making trains / runs PPO agents that draw from torch's global RNG: keep the
            # caller's RNG (the model's initialisation) the same whether or not data were made here
            with torch.random.fork_rng(devices=[]):
                state = np.random.get_state()
                try:
                    # a partial or damaged dataset is finished with the sizes it was started with
                    sizes = dict(man["config"]) if man is not None else None
                    make_dataset(spec.name, profile, root=data_dir, agent_path=agent_path, overrides=sizes,
                                 progress=progress)
                finally:
                    np.random.set_state(state)
        data, self.manifest = load_dataset(spec.name, profile, data_dir, verify=False)
        T = data["actions"].shape[1]
        if self.context > T:
            raise ValueError(f"context {self.context} is longer than the trajectories ({T} steps)")
        self.train_idx, self.val_idx = split_indices(len(data["states"]), self.val_fraction)
        self.stats = train_norm_stats(spec.name, profile, data, self.val_fraction, data_dir)
        self._xm = np.asarray(self.stats["state_mean"], np.float32)
        self._xs = np.asarray(self.stats["state_std"], np.float32)
        self._um = np.asarray(self.stats["action_mean"], np.float32)
        self._us = np.asarray(self.stats["action_std"], np.float32)
        self.steps = T
        self.seeds = data["seeds"]
        xs = torch.from_numpy(self.normalize_states(data["states"]))
        us = torch.from_numpy(self.normalize_actions(data["actions"]))
        self._x_train, self._u_train = xs[self.train_idx], us[self.train_idx]
        self._x_val, self._u_val = xs[self.val_idx], us[self.val_idx]
        self._val_raw = {"states": data["states"][self.val_idx], "actions": data["actions"][self.val_idx],
                         "rewards": data["rewards"][self.val_idx], "seeds": data["seeds"][self.val_idx]}
        if len(self.train_idx) == 0:
            raise DatasetError("no training trajectories")

    @classmethod
    def shapes_from_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """Model shapes from the robot's dimensions and the window, without loading any data."""
        spec = robot(cfg.get("env", "ant"))
        return {"d_in": spec.state_dim + spec.action_dim, "d_out": spec.state_dim,
                "seq_len": int(cfg.get("context", inspect.signature(cls).parameters["context"].default))}

    # ------------------------------------------------------------------ normalisation helpers
    def normalize_states(self, x: np.ndarray) -> np.ndarray:
        return ((x - self._xm) / self._xs).astype(np.float32)

    def denormalize_states(self, x: np.ndarray) -> np.ndarray:
        return (x * self._xs + self._xm).astype(np.float32)

    def normalize_actions(self, u: np.ndarray) -> np.ndarray:
        return ((u - self._um) / self._us).astype(np.float32)

    # ------------------------------------------------------------------------------- windows
    def _windows(self, x: torch.Tensor, u: torch.Tensor, traj: torch.Tensor, start: torch.Tensor) -> tuple:
        pos = start[:, None] + torch.arange(self.context)[None, :]  # (B, L)
        tr = traj[:, None]
        inputs = torch.cat([x[tr, pos], u[tr, pos]], dim=-1)  # [x_t, u_t]
        targets = x[tr, pos + 1]  # x_{t+1}
        return inputs, targets

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Random training windows (uniform trajectory, uniform start), with input noise."""
        n, L = len(self._x_train), self.context
        traj = torch.randint(n, (batch_size,), generator=generator)
        start = torch.randint(self.steps - L + 1, (batch_size,), generator=generator)
        inputs, targets = self._windows(self._x_train, self._u_train, traj, start)
        if self.noise_std > 0 and self.noise_freq > 0:
            hit = torch.rand(batch_size, L, generator=generator) < self.noise_freq
            noise = torch.randn(inputs.shape, generator=generator) * self.noise_std
            inputs = inputs + noise * hit[..., None]
        return Batch(inputs, targets, torch.ones(batch_size, L, dtype=torch.bool))

    def eval_batch(self, batch_size: int, seed: int) -> Batch:
        """Random windows of the validation trajectories (no noise), fixed by ``seed``."""
        x, u = (self._x_val, self._u_val) if len(self._x_val) else (self._x_train, self._u_train)
        g = torch.Generator().manual_seed(seed)
        traj = torch.randint(len(x), (batch_size,), generator=g)
        start = torch.randint(self.steps - self.context + 1, (batch_size,), generator=g)
        inputs, targets = self._windows(x, u, traj, start)
        return Batch(inputs, targets, torch.ones(batch_size, self.context, dtype=torch.bool))

    def val_windows(self) -> list[tuple[int, int, int]]:
        """``(val trajectory, start, first scored position)``: windows tiling each validation
        trajectory with stride ``context``; the last window ends at T and scores only positions not
        scored before, so every validation transition is scored exactly once."""
        L, T = self.context, self.steps
        out = []
        for i in range(len(self._x_val)):
            for s in range(0, T - L + 1, L):
                out.append((i, s, 0))
            covered = (T // L) * L
            if covered < T:
                out.append((i, T - L, covered - (T - L)))
        return out

    def eval_batches(self, batch_size: int, seed: int) -> Iterator[Batch]:
        """The runner's evaluation set: the whole validation split (``seed`` is not needed)."""
        yield from self.val_batches(batch_size)

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """The whole validation set, deterministically, in batches of at most ``batch_size``."""
        wins = self.val_windows()
        for lo in range(0, len(wins), batch_size):
            chunk = wins[lo: lo + batch_size]
            traj = torch.tensor([w[0] for w in chunk])
            start = torch.tensor([w[1] for w in chunk])
            inputs, targets = self._windows(self._x_val, self._u_val, traj, start)
            first = torch.tensor([w[2] for w in chunk])
            mask = torch.arange(self.context)[None, :] >= first[:, None]
            yield Batch(inputs, targets, mask)

    def n_val_positions(self) -> int:
        return len(self._x_val) * self.steps

    def val_trajectories(self) -> dict[str, Any]:
        """Raw (unnormalised) validation trajectories for autoregressive evaluation: ``states``
        (n, T+1, dx), ``actions`` (n, T, du), ``rewards``, ``seeds``; use :meth:`normalize_states`,
        :meth:`normalize_actions` and :meth:`denormalize_states` to move between the model's units."""
        return {k: v.copy() for k, v in self._val_raw.items()}

    # ------------------------------------------------------------------------- loss, metrics
    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Paper, section III: 1/2 ||x^_{t+1} - x_{t+1}||^2, mean over scored positions."""
        diff = (outputs - batch.targets)[batch.mask]
        return 0.5 * diff.float().pow(2).sum(-1).mean()

    @torch.no_grad()
    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        diff = (outputs - batch.targets)[batch.mask].float()
        sq = diff.pow(2)
        return {"loss": float(0.5 * sq.sum(-1).mean()), "mse": float(sq.sum(-1).mean()),
                "mse_per_feature": float(sq.mean())}

    def describe(self) -> dict[str, Any]:
        man = self.manifest
        a = man["agent"]
        agent = {k: a.get(k) for k in ("source", "path", "repo", "revision", "sha256", "mean_return", "std_return",
                                       "eval_episodes", "timesteps", "train_seed", "hyperparameters_source")
                 if a.get(k) is not None}
        return {
            **super().describe(),
            "env": self.env, "env_id": man["env_id"], "profile": self.profile, "data_dir": str(self.data_path),
            "agent": agent, "seeds": man["seeds"], "n_traj": man["n_traj"], "steps": man["steps"],
            "n_train": int(len(self.train_idx)), "n_val": int(len(self.val_idx)),
            "val_fraction": self.val_fraction, "context": self.context,
            "noise": {"std": self.noise_std, "freq": self.noise_freq, "unit": "per time step, all input features"},
            "normalisation": "per-feature mean/std of the training trajectories (states and actions)",
            "loss": "0.5 * ||x_hat_{t+1} - x_{t+1}||^2 on normalised states, mean over scored positions",
            "data_mean_return": man.get("data_returns", {}).get("mean"),
            "packages": man.get("packages"),
        }
