"""Rollouts: one trajectory per seed, ``T`` steps, states and actions recorded.

Trajectory ``i`` resets its environment with ``seed_i`` and then follows the agent's deterministic
policy (``action_noise=0``, the default), or samples its stochastic policy (``action_noise=s``: mean
plus ``s`` times the policy's own standard deviation times N(0, 1) draws from a generator seeded
with ``seed_i``), so it depends only on that seed and the agent (bit for bit: :meth:`Agent.act` evaluates
the policy row by row, see there). ``n_envs`` environments step side by side
(a plain list of envs, like SB3's DummyVecEnv but without its auto-reset) and the policy acts on the
whole batch at once. Returned arrays (float32):

* ``states``  ``(N, T + 1, state_dim)``: x_0 .. x_T (x_T is the state after the last action),
* ``actions`` ``(N, T, action_dim)``: u_0 .. u_{T-1}, clipped to the action space as applied,
* ``rewards`` ``(N, T)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tasks.mujoco.envs import make_env, robot, torch_threads


def rollout(agent, env: str, seeds: Sequence[int], steps: int, n_envs: int = 8, progress: bool = True,
            desc: str | None = None, action_noise: float = 0.0) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    spec = robot(env)
    if not 1 <= steps <= spec.episode_len:
        raise ValueError(f"steps must be in [1, {spec.episode_len}] (seals episodes are {spec.episode_len} steps)")
    if action_noise < 0:
        raise ValueError(f"action_noise must be >= 0, got {action_noise}")
    seeds = [int(s) for s in seeds]
    n = len(seeds)
    states = np.empty((n, steps + 1, spec.state_dim), np.float32)
    actions = np.empty((n, steps, spec.action_dim), np.float32)
    rewards = np.empty((n, steps), np.float32)
    n_envs = max(1, min(n_envs, n))
    envs = [make_env(env) for _ in range(n_envs)]
    bar = tqdm(total=n * steps, desc=desc or f"rollout {spec.env_id}", unit="step", disable=not progress,
               mininterval=2.0)
    try:
        with torch_threads(1):
            for lo in range(0, n, n_envs):
                idx = list(range(lo, min(lo + n_envs, n)))
                batch = envs[: len(idx)]
                obs = np.stack([e.reset(seed=seeds[i])[0] for e, i in zip(batch, idx)])
                rngs = [np.random.default_rng([seeds[i], 0x5EED]) for i in idx] if action_noise else None
                for t in range(steps):
                    if rngs is None:
                        act = agent.act(obs)
                    else:
                        eps = np.stack([g.standard_normal(spec.action_dim) for g in rngs])
                        act = agent.act(obs, noise=action_noise * eps)
                    states[idx, t] = obs
                    actions[idx, t] = act
                    nxt = []
                    for k, e in enumerate(batch):
                        o, r, term, trunc, _ = e.step(act[k])
                        if (term or trunc) and t < steps - 1:
                            raise RuntimeError(f"{spec.env_id} ended at step {t + 1} < {steps} (seed {seeds[idx[k]]})")
                        rewards[idx[k], t] = r
                        nxt.append(o)
                    obs = np.stack(nxt)
                    bar.update(len(idx))
                states[idx, steps] = obs
    finally:
        bar.close()
        for e in envs:
            e.close()
    return {"states": states, "actions": actions, "rewards": rewards, "seeds": np.asarray(seeds, np.int64)}
