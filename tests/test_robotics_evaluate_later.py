"""`evaluate=false`: a robotics table reported right after the sweep, naming the runs whose
prediction evaluation is pending; the same command with `evaluate=true` evaluates only those. The
evaluations are committed beside the records, so a fresh clone (no runs/) restores the evaluated runs
without their weights and regenerates the same table without training or evaluating anything."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from test_experiments import MUJOCO, ROOT, TRAIN

pytest.importorskip("mujoco", reason="needs the [mujoco] extra")


@pytest.mark.slow
def test_report_before_the_evaluation_then_evaluate_the_rest(tmp_path):
    env = dict(os.environ, FSB_RUNS=str(tmp_path / "runs"), FSB_RESULTS=str(tmp_path / "results"),
               FSB_PLOTS=str(tmp_path / "plots"), FSB_DATA=str(tmp_path / "data"), FSB_OFFLINE="1",
               PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "benchmarks.reproduce", "experiment=table2", "profile=smoke", "threads=1",
            "progress=false", *TRAIN, *MUJOCO]

    def run(*extra):
        p = subprocess.run([*base, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-4000:]
        return p, (tmp_path / "results" / "table2" / "smoke" / "table.md").read_text()

    _, table = run("evaluate=false")
    npz = sorted(pathlib.Path(tmp_path / "runs").rglob("evaluation_*.npz"))
    assert not npz, npz
    assert "0 of 4 runs evaluated so far" in table and "`STU` seed 0" in table and "`STU-T` seed 0" in table
    assert table.count("not evaluated yet") == 16  # four prediction columns (two units) of the four models
    assert "Validation MSE per feature" in table

    p, table = run()
    assert len(sorted(pathlib.Path(tmp_path / "runs").rglob("evaluation_*.npz"))) == 4
    assert "not evaluated yet" not in table and "runs evaluated so far" not in table
    assert "[eval] runs evaluated" in p.stderr  # the evaluation's overall progress bar
    res = tmp_path / "results" / "table2" / "smoke"
    committed = sorted(res.glob("evaluations/*/evaluation_*.npz"))
    assert len(committed) == 4 and all(f.stat().st_size < 200_000 for f in committed)
    before = {f: f.read_bytes() for f in [res / "table.md", res / "predictions.csv", res / "records.jsonl", *committed]}

    shutil.rmtree(tmp_path / "runs")  # a fresh clone: results/ but no runs/ (no weights)
    p, table = run()
    assert "[restore] 4 finished run(s) restored" in p.stderr, p.stderr[-3000:]
    assert "[ok]" not in p.stderr and "[eval] " + str(tmp_path) not in p.stderr  # nothing trained or evaluated
    for f, content in before.items():
        assert f.read_bytes() == content, f"{f.name} changed after restoring"
    assert not list((tmp_path / "runs").rglob("model.pt"))


@pytest.mark.slow
def test_a_run_is_evaluated_right_after_it_trains(tmp_path):
    """The prediction evaluation runs in the worker that trained the run, right after its record: a
    sweep stopped part-way keeps the evaluations of its finished runs (their weights are not
    committed). With evaluate=false the run is not evaluated."""
    env = dict(os.environ, FSB_RUNS=str(tmp_path / "runs"), FSB_DATA=str(tmp_path / "data"), FSB_OFFLINE="1",
               PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "benchmarks.train", "experiment=table2", "profile=smoke", "threads=1",
            "progress=false", *TRAIN, *MUJOCO]
    p = subprocess.run([*base, "model=robotics_stu"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    rec = sorted(pathlib.Path(tmp_path / "runs").rglob("record.json"))
    assert len(rec) == 1
    npz = list(rec[0].parent.glob("evaluation_P*.npz"))
    assert len(npz) == 1 and npz[0].stat().st_mtime >= rec[0].stat().st_mtime
    import numpy as np

    with np.load(npz[0]) as z:
        assert {"loss_next", "loss_ar", "mse_next", "mse_ar"} <= set(z.files) and np.isfinite(z["mse_next"]).all()
    assert p.stderr.index("[ok]") < p.stderr.index("[eval]")  # after the run's record, in the same process
    p = subprocess.run([*base, "model=robotics_transformer", "evaluate=false"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    rec = sorted(pathlib.Path(tmp_path / "runs").rglob("robotics_transformer/*/record.json"))
    assert len(rec) == 1 and not list(rec[0].parent.glob("evaluation_*.npz"))


def test_a_failed_evaluation_does_not_fail_the_finished_run(monkeypatch, capsys):
    """An error in the evaluation right after training is logged, not raised: the run's record is
    written, the sweep goes on, and its evaluation step tries again (and reports the error there)."""
    from omegaconf import OmegaConf

    from benchmarks import evaluation, train

    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(evaluation, "evaluate_run", boom)
    cfg = OmegaConf.create({"profile": {"robotics_eval": {"predictions": 5, "max_trajectories": None}}})
    train._evaluate_now(cfg, {"run_dir": "/x/run"}, task=None, device="cpu")
    err = capsys.readouterr().err
    assert "[eval failed] /x/run: RuntimeError: out of memory" in err
