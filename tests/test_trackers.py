"""Experiment trackers (logger=none|csv|tensorboard|wandb): fed by the runner's curve points, on a
tiny sweep; the records are the same with every logger."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks.config import ConfigError, compose, validate
from conftest import paths_overrides

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ["task=lds", "task.seq_len=20", "task.d_hidden=8", "steps=4", "eval_every=2", "eval_size=8", "batch_size=4",
        "threads=1", "progress=false"]


def sweep(tmp_path, logger: str) -> subprocess.CompletedProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, FSB_RUNS=str(tmp_path / "runs"), PYTHONPATH=str(ROOT), WANDB_SILENT="true",
               WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wandb_home"))
    p = subprocess.run([sys.executable, "-m", "benchmarks.train", "-m", "model=stu,s4d", "seed=0", *TINY,
                        f"logger={logger}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def fingerprints(tmp_path) -> dict[str, str]:
    out = {}
    for p in (tmp_path / "runs" / "smoke").rglob("record.json"):
        r = json.loads(p.read_text())
        out[r["model"]] = (r["config_fingerprint"], r["final_metrics"]["mse"])
    return out


def test_csv_and_tensorboard_get_every_curve_point_and_records_do_not_change(tmp_path):
    sweep(tmp_path / "none", "none")
    sweep(tmp_path / "csv", "csv")
    sweep(tmp_path / "tb", "tensorboard")
    base = fingerprints(tmp_path / "none")
    assert base and fingerprints(tmp_path / "csv") == base == fingerprints(tmp_path / "tb")
    rows = sorted((tmp_path / "csv" / "runs" / "_trackers" / "csv").rglob("*.csv"))
    assert len(rows) == 2
    text = rows[0].read_text().splitlines()
    assert text[0].startswith("step,train_loss,eval_loss,eval_mse") and text[-1].startswith("final,")
    assert len(text) == 1 + 3 + 1  # header, the curve points after steps 1, 3 and 4 (the last), the final row
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = [p.parent for p in (tmp_path / "tb" / "runs" / "_trackers" / "tensorboard").rglob("events.out.tfevents.*")]
    assert len(set(runs)) == 2
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    assert {"train_loss", "eval_mse", "final/mse"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("eval_mse")] == [1, 3, 4]


def test_wandb_offline_run_of_a_tiny_sweep(tmp_path):
    pytest.importorskip("wandb")
    sweep(tmp_path, "wandb")
    offline = sorted((tmp_path / "runs" / "_trackers" / "wandb").rglob("offline-run-*"))
    assert len(offline) == 2, offline
    assert all(list(d.glob("*.wandb")) for d in offline)
    assert len(fingerprints(tmp_path)) == 2


def test_unknown_logger_fails_before_any_work(tmp_path):
    with pytest.raises(Exception, match="logger"):
        validate(compose(["task=lds", "model=stu", "logger=nonsense", *paths_overrides(tmp_path)]), "lds")
    cfg = compose(["task=lds", "model=stu", "logger=wandb", "logger.mode=sometimes", *paths_overrides(tmp_path)])
    with pytest.raises(ConfigError, match="logger.mode must be offline, online or disabled"):
        validate(cfg, "lds")
    assert not (tmp_path / "runs").exists()
