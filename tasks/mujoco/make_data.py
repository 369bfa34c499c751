"""Make a MuJoCo trajectory dataset.

    python -m tasks.mujoco.make_data env=ant profile=smoke [agent.path=...] [agent.use_hub=false]
        [data_dir=...] [profiles.smoke.n_traj=64 ...]

Settings and their defaults: ``conf/data/mujoco.yaml``. Writes shards, ``manifest.json`` and
``plot.png`` under ``$FSB_DATA/mujoco/<env>/<profile>/``; rerunning finishes or repairs a dataset.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    from tasks.mujoco.dataset import DatasetError, load_config, make_dataset

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    bad = [a for a in argv if "=" not in a]
    if bad:
        print(f"arguments must be key=value, got {bad}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(argv)
    except Exception as e:  # noqa: BLE001  (unknown key: show OmegaConf's message)
        print(f"bad setting: {e}", file=sys.stderr)
        return 2
    profiles = OmegaConf.to_container(cfg.profiles)
    try:
        make_dataset(cfg.env, cfg.profile, root=cfg.data_dir, agent_path=cfg.agent.path, use_hub=cfg.agent.use_hub,
                     overrides=profiles.get(cfg.profile))
    except (DatasetError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
