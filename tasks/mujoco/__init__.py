"""MuJoCo robotics data of section III: seals Ant/HalfCheetah/Walker2d rolled out by PPO agents.

* :mod:`tasks.mujoco.envs`     the three robots, their dimensions, data locations
* :mod:`tasks.mujoco.agents`   hub / user-file / locally trained PPO agents, with a record
* :mod:`tasks.mujoco.rollout`  deterministic seeded rollouts
* :mod:`tasks.mujoco.dataset`  sharded, checksummed, resumable datasets with a manifest and a plot
* :mod:`tasks.mujoco.task`     :class:`MujocoTask`, the training-time view (windows, split, noise, loss)
* ``python -m tasks.mujoco.make_data env=ant profile=smoke`` makes a dataset.

Nothing here imports mujoco/gymnasium/SB3 at import time, so the package imports without the
``[mujoco]`` extra.
"""
