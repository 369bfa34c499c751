"""The training runner, resumable sweeps, the report, and config composition."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")


def train(tmp_path, *args, check=True):
    env = dict(os.environ, FSB_RUNS=str(tmp_path / "runs"), PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "benchmarks.train", *args, "progress=false", "threads=1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"train failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-4000:]}")
    return p


def records(tmp_path):
    return sorted((tmp_path / "runs").rglob("record.json"))


SWEEP = ["-m", "experiment=fig4", "model=stu_t,s4d", "seed=0,1", "steps=6", "eval_size=16",
         "batch_size=8", "eval_every=3"]


def test_multirun_resumes_and_reports(tmp_path):
    train(tmp_path, *SWEEP)
    recs = records(tmp_path)
    assert len(recs) == 4
    rec = json.loads(recs[0].read_text())
    for key in ("config", "seed", "git_commit", "versions", "device", "backends", "params", "wall_time_s",
                "final_metrics", "status"):
        assert key in rec, key
    assert rec["status"] == "ok" and rec["backends"] and rec["versions"]["torch"]
    curve = (recs[0].parent / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,train_loss") and len(curve) >= 3
    mtimes = {p: p.stat().st_mtime_ns for p in recs}

    # Rerunning the sweep does no work and duplicates nothing.
    p = train(tmp_path, *SWEEP)
    assert p.stderr.count("[skip]") == 4
    assert records(tmp_path) == recs and all(p.stat().st_mtime_ns == t for p, t in mtimes.items())

    # Deleting one record reruns exactly that run.
    victim = [r for r in recs if "s4d" in str(r) and r.parent.name.startswith("seed1")][0]
    victim.unlink()
    p = train(tmp_path, *SWEEP)
    assert p.stderr.count("[skip]") == 3 and p.stderr.count("[ok]") == 1
    assert victim.exists()

    from benchmarks.report import report
    out = report("fig4", "smoke", tmp_path / "runs", tmp_path / "results", tmp_path / "plots")
    import pandas as pd
    runs = pd.read_csv(out["runs"])
    assert len(runs) == 4 and set(runs["model"]) == {"stu_t", "s4d"}
    assert {"model", "seed", "status", "final", "params", "backends", "git_commit", "device"} <= set(runs.columns)
    curves = pd.read_csv(out["curves"])
    assert {"model", "seed", "step", "eval_accuracy"} <= set(curves.columns)
    assert out["plot"].exists() and out["plot"].stat().st_size > 10_000
    md = out["summary"].read_text()
    assert "STU-T" in md and "S4D" in md and "solved" in md
    assert (tmp_path / "results" / "fig4" / "smoke" / "records.jsonl").read_text().count("\n") == 4


def test_other_sizes_are_another_run_and_nothing_is_lost(tmp_path):
    """A run with other profile sizes has another fingerprint, so another folder: the finished one is
    untouched and is found again (skipped) when its own config comes back."""
    one = ["experiment=fig4", "model=stu_t", "seed=0", "eval_size=16", "batch_size=8"]
    train(tmp_path, *one, "profile.steps.induction_heads=3")
    (rec,) = records(tmp_path)
    first = json.loads(rec.read_text())
    assert first["steps_done"] == 3 and len(first["config_fingerprint"]) == 16
    train(tmp_path, *one, "profile.steps.induction_heads=5")
    recs = records(tmp_path)
    assert len(recs) == 2 and rec in recs and json.loads(rec.read_text()) == first
    assert {json.loads(r.read_text())["steps_done"] for r in recs} == {3, 5}
    p = train(tmp_path, *one, "profile.steps.induction_heads=3", "checkpoint_every=100")  # not a result setting
    assert "[skip]" in p.stderr and len(records(tmp_path)) == 2


def test_diverging_run_is_recorded_and_sweep_goes_on(tmp_path):
    train(tmp_path, "-m", "task=lds", "model=stu,s4d", "steps=5", "optimizer.lr=1e12", "diverge_loss=1e3",
          "eval_size=8", "batch_size=4")
    recs = [json.loads(p.read_text()) for p in records(tmp_path)]
    assert len(recs) == 2, "both runs of the sweep finished with a record"
    assert any(r["status"] == "diverged" for r in recs)
    for r in recs:
        if r["status"] == "diverged":
            assert "loss" in r["status_reason"]


def test_bad_names_fail_before_training_with_valid_choices(tmp_path):
    p = train(tmp_path, "model=stu_tt", check=False)
    assert p.returncode != 0 and "stu_t" in p.stderr and "transformer" in p.stderr
    p = train(tmp_path, "task=induction_head", check=False)
    assert p.returncode != 0 and "induction_heads" in p.stderr
    p = train(tmp_path, "model.widht=3", check=False)
    assert p.returncode != 0 and "widht" in p.stderr
    assert not records(tmp_path)


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    train(tmp_path, "-m", "hydra/launcher=submitit_local", "task=associative_recall", "model=stu_t", "steps=3",
          "eval_size=8", "batch_size=4", "hydra.launcher.timeout_min=5")
    assert len(records(tmp_path)) == 1


def test_checkpoint_resume(tmp_path, monkeypatch, capsys):
    """A run that crashes after a checkpoint resumes from it instead of restarting."""
    from benchmarks.train import run
    from tasks.associative_recall import AssociativeRecall

    overrides = ["task=associative_recall", "model=stu_t", "steps=8", "eval_every=2", "checkpoint_every=4",
                 "eval_size=8", "batch_size=4", "progress=false", f"paths.runs={tmp_path}"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    original = AssociativeRecall.train_batch

    def crash_at_6(self, step, *a, **k):
        if step == 6:
            raise RuntimeError("simulated crash")
        return original(self, step, *a, **k)

    monkeypatch.setattr(AssociativeRecall, "train_batch", crash_at_6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, "stu_t", "associative_recall")
    ckpts = list(tmp_path.rglob("checkpoint.pt"))
    assert len(ckpts) == 1 and not list(tmp_path.rglob("record.json"))
    monkeypatch.setattr(AssociativeRecall, "train_batch", original)
    run(cfg, "stu_t", "associative_recall")
    assert "from step 4" in capsys.readouterr().err
    rec = json.loads(next(tmp_path.rglob("record.json")).read_text())
    assert rec["status"] == "ok" and rec["steps_done"] == 8
    steps = [int(line.split(",")[0]) for line in (ckpts[0].parent / "curve.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 8, "curve continues without duplicates"
    assert not ckpts[0].exists(), "checkpoint removed once the record is written"
    # time per step counts the steps of both segments (not the last segment's only)
    assert 0 < rec["s_per_step"] * rec["steps_done"] <= rec["wall_time_s"]


def _experiments():
    return sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("experiment", _experiments())
@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_every_experiment_composes(experiment, profile):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"profile={profile}"],
                      return_hydra_config=True)
        assert cfg.experiment_name == experiment
        if cfg.kind == "train":
            assert int(cfg.trials) >= 1
            assert "model" in cfg.hydra.sweeper.params


def test_every_model_and_task_config_composes():
    import models
    import tasks
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for m in models.available_models():
            for t in tasks.available_tasks():
                cfg = compose("train", overrides=[f"model={m}", f"task={t}"])
                assert cfg.model._target_ and cfg.task._target_
