"""Make a MuJoCo trajectory dataset (a Hydra app on ``conf/make_data.yaml``).

    python -m tasks.mujoco.make_data env=ant profile=smoke [agent.path=...] [agent.use_hub=false]
        [paths.data=...] [profile.data.mujoco.n_traj=64 ...]

Sizes: ``profile.data.mujoco`` of ``conf/profile/<profile>.yaml``. Writes shards, ``manifest.json``
and ``plot.png`` under ``<paths.data>/mujoco/<env>/<profile>/``; rerunning finishes or repairs a
dataset. A bad setting (unknown robot, key or profile) stops before any work with the valid choices.
"""
from __future__ import annotations

import pathlib
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from tasks.base import CONF_DIR, register_resolvers

register_resolvers()


def make(cfg: DictConfig) -> int:
    from tasks.mujoco.dataset import DatasetError, make_dataset
    from tasks.mujoco.envs import robot

    try:
        spec = robot(str(cfg.env))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = OmegaConf.to_container(cfg.profile.data.mujoco, resolve=True)
    try:
        make_dataset(spec.name, str(cfg.profile.name), root=cfg.paths.data, agent_path=cfg.agent.path,
                     use_hub=bool(cfg.agent.use_hub), overrides=sizes, progress=bool(cfg.progress))
    except (DatasetError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="make_data")
def main(cfg: DictConfig) -> None:
    code = make(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
