"""Next-state prediction on MuJoCo trajectories (section III).

Inputs are ``[x_t, u_t]`` (37 dims for Ant, 24 for HalfCheetah/Walker2d), targets ``x_{t+1}``
(29 / 18 dims), over windows of ``context`` consecutive steps of one trajectory. States and actions
are normalised per feature with the mean and std of the *training* trajectories only. The loss is
the paper's: half the squared Euclidean distance between predicted and true (normalised) next
state, averaged over the scored positions, L = mean_t 1/2 ||x^_{t+1} - x_{t+1}||^2.

Input noise (ablation tables VIII-X, "0.1/0.1 means Gaussian noise with a standard deviation of
0.1 is applied to 10% of the data points"): a data point is one time step, so each step of a
training window independently, with probability ``noise_freq``, gets N(0, noise_std^2) noise on
every input feature. Targets are never noised.

Two regimes (``conf/regime/``) set the options below; the defaults are the suite's own (``ours``),
the alternatives those of the paper authors' robotics code (windsornguyen/spectral_ssm,
``utils/dataloader.py``, ``losses/loss_ant.py``, ``models/stu/train.py``):

==================  ===========================================  =============================================
option              ours (default)                               authors
==================  ===========================================  =============================================
``loss``            ``half_sq``: 1/2 ||x^ - x||^2 per position    ``mse``: mean squared error per feature
``windows``         ``random``: uniform start in the trajectory  ``first``: the first ``context`` steps
``sampling``        ``random``: trajectories with replacement    ``epoch``: a shuffled pass over the trajectories
``eval_windows``    ``tile``: every validation transition once   ``first``: the first ``context`` steps of each
``normalisation``   ``train``: training-split statistics          ``per_split``: each split by its own statistics
                    (states over all steps, actions), both splits (mean/std over [inputs; targets] of the split,
                                                                 noisy inputs included; std + 1e-5)
``noise_units``     ``normalised``                               ``raw`` (added before normalising)
``noise_on``        ``train``                                    ``train_val`` (validation inputs too, drawn once)
==================  ===========================================  =============================================

Whatever the options, :meth:`metrics` reports ``paper_mse``: the mean squared error per feature in
the authors' normalisation of the validation split (their validation loader normalises the split by
its own statistics), the unit of the paper's tables.
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
    uses_regime = True  # its runs take the regime's training settings (conf/regime/, benchmarks.config.settings)

    OPTIONS = {"loss": ("half_sq", "mse"), "windows": ("random", "first"), "sampling": ("random", "epoch"),
               "eval_windows": ("tile", "first"), "normalisation": ("train", "per_split"),
               "noise_units": ("normalised", "raw"), "noise_on": ("train", "train_val")}
    AUTHORS_EPS = 1e-5  # added to the std by the authors' dataloader

    def __init__(self, env: str = "ant", data_profile: str = "smoke", context: int = 512, val_fraction: float = 0.1,
                 noise_std: float = 0.0, noise_freq: float = 0.0, data_dir: str | None = None,
                 agent_path: str | None = None, progress: bool = True, loss: str = "half_sq",
                 windows: str = "random", sampling: str = "random", eval_windows: str = "tile",
                 normalisation: str = "train", noise_units: str = "normalised", noise_on: str = "train"):
        self.options = {"loss": loss, "windows": windows, "sampling": sampling, "eval_windows": eval_windows,
                        "normalisation": normalisation, "noise_units": noise_units, "noise_on": noise_on}
        for key, value in self.options.items():
            if value not in self.OPTIONS[key]:
                raise ValueError(f"unknown task.{key} {value!r}; valid: {', '.join(self.OPTIONS[key])}")
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
        # the authors' statistics of each split (their validation loss is in the validation split's)
        self.split_stats = {name: self.authors_stats(data["states"][idx], data["actions"][idx])
                            for name, idx in (("train", self.train_idx), ("val", self.val_idx)) if len(idx)}
        val_name = "val" if len(self.val_idx) else "train"
        # the units each split is given to the model in: (state mean, state std, action mean, action std)
        if normalisation == "train":
            self._split_units = {k: (self._xm, self._xs, self._um, self._us) for k in ("train", "val")}
            # errors in our units -> errors in the authors' units of the validation split
            self._paper_scale = torch.from_numpy(self._xs / self.split_stats[val_name]["state_den"]).float()
        else:
            self._split_units = {}
            for k in ("train", "val"):
                st = self.split_stats.get(k) or self.split_stats["train"]
                self._split_units[k] = (st["state_mean"], st["state_den"], st["action_mean"], st["action_den"])
            self._paper_scale = torch.ones(self.d_out)
        (self._x_train, self._u_train), (self._x_val, self._u_val) = (
            (torch.from_numpy(self.normalize_states(data["states"][idx], k)),
             torch.from_numpy(self.normalize_actions(data["actions"][idx], k)))
            for k, idx in (("train", self.train_idx), ("val", self.val_idx)))
        scale = {k: (u[1], u[3]) for k, u in self._split_units.items()}
        # noise std per input feature in the model's (normalised) units, per split
        self._noise = {}
        for k, (xd, ud) in scale.items():
            den = np.concatenate([np.asarray(xd, np.float64), np.asarray(ud, np.float64)])
            per = np.full(self.d_in, self.noise_std) / (den if noise_units == "raw" else 1.0)
            self._noise[k] = torch.from_numpy(per.astype(np.float32))
        self._val_noise = None
        if noise_on == "train_val" and self.noise_std > 0 and self.noise_freq > 0 and len(self.val_idx):
            # drawn once for the whole validation split, as the authors' loader noises its arrays once
            g = torch.Generator().manual_seed(20240)
            n, d = len(self.val_idx), self.d_in
            hit = torch.rand(n, T, generator=g) < self.noise_freq
            self._val_noise = torch.randn(n, T, d, generator=g) * self._noise["val"] * hit[..., None]
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

    def authors_stats(self, states: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
        """The authors' per-feature statistics of one split: states over the concatenation of the
        inputs x_0..x_{T-1} and the targets x_1..x_T, actions over the inputs; the std in the
        denominator gets +1e-5. Their loader noises the inputs before computing these; the noise is
        independent of the data, so its expected effect is added to the variances (a fraction
        ``noise_freq`` of the inputs gets variance ``noise_std^2`` in raw units: half of the state
        samples are inputs, all action samples)."""
        T = actions.shape[1]
        xs = np.concatenate([states[:, :T], states[:, 1:T + 1]], axis=0).reshape(-1, states.shape[-1]).astype(np.float64)
        us = actions.reshape(-1, actions.shape[-1]).astype(np.float64)
        x_var, u_var = xs.var(0), us.var(0)
        if self.noise_std > 0 and self.noise_freq > 0 and self.options["noise_units"] == "raw":
            extra = self.noise_freq * self.noise_std ** 2
            x_var, u_var = x_var + 0.5 * extra, u_var + extra
        return {"state_mean": xs.mean(0), "state_den": np.sqrt(x_var) + self.AUTHORS_EPS,
                "action_mean": us.mean(0), "action_den": np.sqrt(u_var) + self.AUTHORS_EPS}

    @classmethod
    def steps_per_epoch_from_config(cls, tcfg: dict[str, Any], batch_size: int, run_cfg=None) -> int:
        """Batches in one pass over the training trajectories, without loading the data: the number
        of trajectories from the dataset's manifest, or (not made yet) from the run profile's sizes
        when the task uses the run's profile."""
        sig = inspect.signature(cls).parameters
        get = lambda k: tcfg.get(k, sig[k].default)  # noqa: E731
        spec = robot(get("env"))
        man = read_manifest(dataset_dir(spec.name, get("data_profile"), get("data_dir")))
        if man is not None and man.get("complete"):
            n = int(man["n_traj"])
        else:
            from omegaconf import OmegaConf

            prof = OmegaConf.select(run_cfg, "profile.name") if run_cfg is not None else None
            n = OmegaConf.select(run_cfg, "profile.data.mujoco.n_traj") if prof == get("data_profile") else None
            if n is None:
                raise DatasetError(f"epochs: the size of the {spec.name} {get('data_profile')} dataset is not known "
                                   f"before it is made; make it first (make data-mujoco ENV={spec.name} "
                                   f"PROFILE={get('data_profile')}) or give steps=N")
        train, _ = split_indices(int(n), float(get("val_fraction")))
        return -(-len(train) // int(batch_size))

    # ------------------------------------------------------------------ normalisation helpers
    # ``split=None``: the training trajectories' statistics (``self.stats``). ``split="train"|"val"``:
    # the units in which that split is given to the model, which differ from ``self.stats`` under
    # ``normalisation=per_split`` (each split by its own statistics, the authors' loader): the
    # prediction evaluation feeds the validation trajectories in the validation split's units, as
    # the validation loss does.
    def _units(self, split: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if split is None:
            return self._xm, self._xs, self._um, self._us
        if split not in self._split_units:
            raise ValueError(f"unknown split {split!r}; valid splits: None, {', '.join(self._split_units)}")
        return self._split_units[split]

    def normalize_states(self, x: np.ndarray, split: str | None = None) -> np.ndarray:
        m, s, _, _ = self._units(split)
        return ((x - m) / s).astype(np.float32)

    def denormalize_states(self, x: np.ndarray, split: str | None = None) -> np.ndarray:
        m, s, _, _ = self._units(split)
        return (x * s + m).astype(np.float32)

    def normalize_actions(self, u: np.ndarray, split: str | None = None) -> np.ndarray:
        _, _, m, s = self._units(split)
        return ((u - m) / s).astype(np.float32)

    def paper_scale(self) -> torch.Tensor:
        """Per-feature factors taking a state error in the model's units of the validation split to the
        paper's unit (the validation split normalised by its own statistics, the authors' loader):
        ``paper_mse = mean((error * paper_scale())**2)``."""
        return self._paper_scale.clone()

    # ------------------------------------------------------------------------------- windows
    def _windows(self, x: torch.Tensor, u: torch.Tensor, traj: torch.Tensor, start: torch.Tensor) -> tuple:
        pos = start[:, None] + torch.arange(self.context)[None, :]  # (B, L)
        tr = traj[:, None]
        inputs = torch.cat([x[tr, pos], u[tr, pos]], dim=-1)  # [x_t, u_t]
        targets = x[tr, pos + 1]  # x_{t+1}
        return inputs, targets

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches in one pass over the training trajectories (the last one may be smaller)."""
        return -(-len(self._x_train) // int(batch_size))

    def _noisy(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.noise_std > 0 and self.noise_freq > 0:
            B, L = inputs.shape[:2]
            hit = torch.rand(B, L, generator=generator) < self.noise_freq
            noise = torch.randn(inputs.shape, generator=generator) * self._noise["train"]
            inputs = inputs + noise * hit[..., None]
        return inputs

    def _starts(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.options["windows"] == "first":
            return torch.zeros(n, dtype=torch.long)
        return torch.randint(self.steps - self.context + 1, (n,), generator=generator)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Random training windows (uniform trajectory; start per ``windows``), with input noise."""
        n, L = len(self._x_train), self.context
        traj = torch.randint(n, (batch_size,), generator=generator)
        inputs, targets = self._windows(self._x_train, self._u_train, traj, self._starts(batch_size, generator))
        return Batch(self._noisy(inputs, generator), targets, torch.ones(batch_size, L, dtype=torch.bool))

    def epoch_order(self, epoch: int, seed: int) -> torch.Tensor:
        """The shuffled order of the training trajectories in ``epoch`` of the run seeded ``seed``
        (a function of the two only, so a resumed run continues the same pass)."""
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) + 1)
        return torch.randperm(len(self._x_train), generator=g)

    def train_batch(self, step: int, batch_size: int, generator: torch.Generator) -> Batch:
        """``sampling=random``: :meth:`sample`. ``sampling=epoch``: batch ``step`` of consecutive
        passes over the shuffled training trajectories (the run's seed is the generator's initial seed)."""
        if self.options["sampling"] == "random":
            return self.sample(batch_size, generator)
        spe = self.steps_per_epoch(batch_size)
        epoch, k = divmod(int(step), spe)
        traj = self.epoch_order(epoch, generator.initial_seed())[k * batch_size:(k + 1) * batch_size]
        n = len(traj)
        inputs, targets = self._windows(self._x_train, self._u_train, traj, self._starts(n, generator))
        return Batch(self._noisy(inputs, generator), targets, torch.ones(n, self.context, dtype=torch.bool))

    def eval_batch(self, batch_size: int, seed: int) -> Batch:
        """Random windows of the validation trajectories, fixed by ``seed``."""
        x, u = (self._x_val, self._u_val) if len(self._x_val) else (self._x_train, self._u_train)
        g = torch.Generator().manual_seed(seed)
        traj = torch.randint(len(x), (batch_size,), generator=g)
        start = torch.randint(self.steps - self.context + 1, (batch_size,), generator=g)
        inputs, targets = self._windows(x, u, traj, start)
        if self._val_noise is not None and len(self._x_val):
            inputs = inputs + self._val_noise[traj[:, None], start[:, None] + torch.arange(self.context)[None, :]]
        return Batch(inputs, targets, torch.ones(batch_size, self.context, dtype=torch.bool))

    def val_windows(self) -> list[tuple[int, int, int]]:
        """``(val trajectory, start, first scored position)``: windows tiling each validation
        trajectory with stride ``context``; the last window ends at T and scores only positions not
        scored before, so every validation transition is scored exactly once."""
        L, T = self.context, self.steps
        if self.options["eval_windows"] == "first":
            return [(i, 0, 0) for i in range(len(self._x_val))]
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
            if self._val_noise is not None:
                inputs = inputs + self._val_noise[traj[:, None], start[:, None] + torch.arange(self.context)[None, :]]
            first = torch.tensor([w[2] for w in chunk])
            mask = torch.arange(self.context)[None, :] >= first[:, None]
            yield Batch(inputs, targets, mask)

    def n_val_positions(self) -> int:
        return len(self._x_val) * (self.context if self.options["eval_windows"] == "first" else self.steps)

    def val_trajectories(self) -> dict[str, Any]:
        """Raw (unnormalised) validation trajectories for autoregressive evaluation: ``states``
        (n, T+1, dx), ``actions`` (n, T, du), ``rewards``, ``seeds``; use :meth:`normalize_states`,
        :meth:`normalize_actions` and :meth:`denormalize_states` with ``split="val"`` to move between
        them and the units the model is given the validation split in."""
        return {k: v.copy() for k, v in self._val_raw.items()}

    # ------------------------------------------------------------------------- loss, metrics
    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``half_sq`` (paper, section III): 1/2 ||x^_{t+1} - x_{t+1}||^2, mean over scored positions;
        ``mse`` (the authors' code: ``nn.MSELoss()``): mean over scored positions and features."""
        sq = (outputs - batch.targets)[batch.mask].float().pow(2)
        if self.options["loss"] == "mse":
            return sq.mean()
        return 0.5 * sq.sum(-1).mean()

    @torch.no_grad()
    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        """``loss`` (the training loss's unit), ``half_sq`` (1/2 ||.||^2), ``mse`` (||.||^2),
        ``mse_per_feature`` (in the run's normalisation) and ``paper_mse`` (per feature, in the
        authors' normalisation of the validation split: the paper's unit)."""
        diff = (outputs - batch.targets)[batch.mask].float()
        sq = diff.pow(2)
        half = float(0.5 * sq.sum(-1).mean())
        per_feature = float(sq.mean())
        paper = float((diff * self._paper_scale.to(diff.device)).pow(2).mean())
        return {"loss": per_feature if self.options["loss"] == "mse" else half, "half_sq": half,
                "mse": float(sq.sum(-1).mean()), "mse_per_feature": per_feature, "paper_mse": paper}

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
            "options": dict(self.options),
            "noise": {"std": self.noise_std, "freq": self.noise_freq, "units": self.options["noise_units"],
                      "on": self.options["noise_on"], "unit": "per time step, all input features"},
            "normalisation": ("per-feature mean/std of the training trajectories (states and actions)"
                              if self.options["normalisation"] == "train" else
                              "each split by its own per-feature mean/std (the authors' loader)"),
            "loss": ("0.5 * ||x_hat_{t+1} - x_{t+1}||^2 on normalised states, mean over scored positions"
                     if self.options["loss"] == "half_sq" else "mean squared error per feature (nn.MSELoss)"),
            "paper_unit": "paper_mse: mean squared error per feature, the validation split normalised by its own "
                          "statistics (the authors' loader)",
            "data_mean_return": man.get("data_returns", {}).get("mean"),
            "packages": man.get("packages"),
        }
