"""Every paper result, end to end at a tiny size: `python -m benchmarks.reproduce experiment=<E>` for
each `conf/experiment/<E>.yaml` (the experiment glob). A new experiment file is covered without a
line of test code; a kind or an experiment this file does not know how to shrink fails here."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("[!_]*.yaml"))
TINY_DATA = {"n_traj": 6, "steps": 40, "shard_size": 3, "n_envs": 2, "seed": 0, "agent_timesteps": 128,
             "agent_seed": 0, "eval_episodes": 1}
TRAIN = ["steps=2", "trials=1", "eval_size=4", "batch_size=2", "eval_every=1"]
MUJOCO = ["profile.mujoco_context=16", "task.val_fraction=0.34", "profile.robotics_eval.predictions=5",
          "profile.robotics_eval.max_trajectories=1", *(f"profile.data.mujoco.{k}={v}" for k, v in TINY_DATA.items())]
BY_KIND = {
    "landscape": ["profile.landscape_grid=2", "steps=1", "batch_size=2", "model_overrides.depth=1"],
    "timing": ["profile.mujoco_context=16", "profile.batch_size.mujoco_ant=2", "timing.warmup=1", "timing.repeats=1"],
    "speed": ["profile.speed.warmup=1", "profile.speed.repeats=1", "profile.speed.min_repeats=1",
              "profile.speed.train.settings_only=[fig2_lds]", "profile.speed.train.models_only=[stu_fast]",
              "profile.speed.train.settings.fig2_lds.batch=2", "profile.speed.train.settings.fig2_lds.seq_len=16",
              "profile.speed.sweep.lengths=[16]", "profile.speed.sweep.only=[stu-kernel-freq]"],
    "filters": [],
    "trial_batching": ["trial_batching.steps=1", "trial_batching.warmup=0", "trial_batching.models=[stu,transformer_moe]",
                       "trial_batching.settings.fig2.trials=2", "trial_batching.settings.fig4.trials=2"],
    "sensitivity": [],
    "sliding_window": ["sliding_window.width=32", "sliding_window.sizes.smoke.lengths=[64,128]",
                       "sliding_window.sizes.smoke.warmup=0", "sliding_window.sizes.smoke.repeats=1"],
}


def _kind_and_task(name: str) -> tuple[str, str]:
    from benchmarks.config import compose

    cfg = compose([f"experiment={name}"], return_hydra_config=True)
    return str(cfg.kind), str(cfg.task._target_)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_end_to_end_at_a_tiny_size(name, tmp_path):
    kind, task = _kind_and_task(name)
    mujoco = task.endswith("MujocoTask")
    if mujoco:
        pytest.importorskip("mujoco", reason="needs the [mujoco] extra")
    if kind == "train":
        args = TRAIN + (MUJOCO if mujoco else [])
    else:
        assert kind in BY_KIND, f"{name}: kind {kind!r} has no tiny size in this test; add one"
        args = list(BY_KIND[kind])
        if mujoco and kind == "landscape":
            args += ["profile.mujoco_context=16", "task.val_fraction=0.34",
                     *(f"profile.data.mujoco.{k}={v}" for k, v in TINY_DATA.items())]
    env = dict(os.environ, FSB_RUNS=str(tmp_path / "runs"), FSB_RESULTS=str(tmp_path / "results"),
               FSB_PLOTS=str(tmp_path / "plots"), FSB_DATA=str(tmp_path / "data"), FSB_OFFLINE="1",
               PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "benchmarks.reproduce", f"experiment={name}", "profile=smoke", "threads=1",
           "progress=false", *args]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    out = tmp_path / "results" / name / "smoke"
    files = {f.name for f in out.iterdir()}
    assert files, f"nothing written under {out}"
    assert list((tmp_path / "plots" / name / "smoke").glob("*.png")), "no figure"
    if kind == "train":
        recs = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        assert recs and all(r["status"] == "ok" for r in recs)
        assert {"summary.md", "runs.csv", "curves.csv"} <= files
        if mujoco:
            assert "table.md" in files and "table.tex" in files
    else:
        assert "record.json" in files
