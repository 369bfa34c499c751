"""The runner's reliability cases (issue: one runner you can trust): sweeps that keep every result,
run folders that cannot collide, bad input stopped before any file is touched, divergence at any
step, corrupt records, claims, temporaries, and the data RNG kept apart from the training RNG."""
from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from benchmarks import runs
from benchmarks.config import compose

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ["steps=3", "eval_size=8", "batch_size=4", "eval_every=2", "progress=false", "threads=1"]


def train(tmp_path, *args, check=True):
    env = dict(os.environ, FSB_RUNS=str(tmp_path / "runs"), PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "benchmarks.train", *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"train failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-4000:]}")
    return p


def records(tmp_path):
    return sorted((tmp_path / "runs").rglob("record.json"))


def test_width_sweep_keeps_both_results_and_reruns_nothing(tmp_path):
    args = ["-m", "task=associative_recall", "model=stu_t", "model.width=16,32", *TINY]
    train(tmp_path, *args)
    recs = records(tmp_path)
    assert len(recs) == 2 and recs[0].parent != recs[1].parent
    widths = sorted(json.loads(r.read_text())["spec"]["model"]["width"] for r in recs)
    assert widths == [16, 32]
    p = train(tmp_path, *args)
    assert p.stderr.count("[skip]") == 2 and "[ok]" not in p.stderr
    from benchmarks.report import report

    out = report("adhoc", "smoke", tmp_path / "runs", tmp_path / "results", tmp_path / "plots", quiet=True)
    summary = out["summary_df"]
    assert len(summary) == 2
    assert sorted(summary["label"]) == ["STU-T (width=16)", "STU-T (width=32)"]


def test_equal_values_are_one_run_and_mixers_change_the_label(tmp_path):
    p = train(tmp_path, "-m", "task=associative_recall", "model=stu_t", "optimizer.lr=1e-3,0.001", *TINY)
    assert len(records(tmp_path)) == 1 and p.stderr.count("[skip]") == 1 and "[same run]" in p.stderr
    train(tmp_path, "task=associative_recall", "model=stu", "model.mixers=[stu_t]", *TINY)
    from benchmarks.report import gather

    runs_df, _, _ = gather(tmp_path / "runs" / "smoke", "adhoc")
    labels = set(runs_df["label"])
    assert any("mixers" in lab and lab.startswith("STU ") for lab in labels), labels


def test_report_never_pools_tasks(tmp_path):
    train(tmp_path, "task=associative_recall", "model=stu_t", *TINY)
    train(tmp_path, "task=lds", "model=stu_t", *TINY)
    from benchmarks.report import report

    with pytest.raises(ValueError, match="several tasks"):
        report("adhoc", "smoke", tmp_path / "runs", tmp_path / "results", tmp_path / "plots", quiet=True)


BAD = [
    (["steps=0"], "steps must be >= 1"),
    (["model.depth=0"], "model.depth must be >= 1"),
    (["task.seq_len=0"], "task.seq_len must be >= 1"),
    (["model.width=0"], "model.width must be >= 1"),
    (["model.width=abc"], "model.width must be an integer"),
    (["batch_size=0"], "batch_size must be >= 1"),
    (["eval_size=0"], "eval_size must be >= 1"),
    (["dtype=float16"], "valid dtypes: float32, float64, bfloat16"),
    # S4D's kernel has no bfloat16 CPU path (the FFT mixers now convolve in float32, so STU runs in bfloat16)
    (["dtype=bfloat16", "model=s4d"], "bfloat16 on a CPU"),
    (["optimizer.name=adamx"], "valid optimizers"),
    (["model.mixers=[nope]"], "valid mixers"),
    (["device=cuda:7"] if not torch.cuda.is_available() else ["device=tpu"], "valid"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[0][0] for b in BAD])
def test_bad_input_fails_before_any_file_is_touched(tmp_path, args, message):
    train(tmp_path, "task=associative_recall", "model=stu", *TINY)  # a finished run must stay as it is
    before = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file() and ".hydra" not in p.parts}
    model = next((a for a in args if a.startswith("model=")), "model=stu")
    args = [a for a in args if a != model]
    p = train(tmp_path, "task=associative_recall", model, *TINY, *args, check=False)
    assert p.returncode != 0 and message in p.stderr, p.stderr[-2000:]
    after = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file() and ".hydra" not in p.parts}
    assert after == before


def test_a_bad_job_stops_the_whole_sweep_before_it_starts(tmp_path):
    p = train(tmp_path, "-m", "task=associative_recall", "model=stu_t", "batch_size=4,0",
              *[a for a in TINY if not a.startswith("batch_size")], check=False)
    assert "batch_size must be >= 1" in p.stderr and "nothing was run" in p.stderr
    assert not records(tmp_path)


def test_attention_refuses_longer_inputs_than_it_was_built_for():
    import models

    for name in models.available_mixers():
        mix = models.build_mixer(name, width=16, seq_len=16)  # >= the 16 fixed spectral filters
        with pytest.raises(ValueError, match="seq_len"):
            mix(torch.randn(1, 17, 16))


def _cfg(tmp_path, *extra):
    return compose(["task=lds", "model=stu", *TINY, f"paths.runs={tmp_path}", *extra])


def test_non_finite_loss_at_the_last_step_is_diverged(tmp_path, monkeypatch):
    from benchmarks.train import run
    from tasks.lds import LDS

    original = LDS.train_batch

    def nan_at_last(self, step, *a, **k):
        b = original(self, step, *a, **k)
        if step == 2:
            b.inputs[:] = float("nan")
        return b

    monkeypatch.setattr(LDS, "train_batch", nan_at_last)
    run(_cfg(tmp_path), "stu", "lds", [])
    rec = json.loads(next(tmp_path.rglob("record.json")).read_text())
    assert rec["status"] == "diverged" and "step 2" in rec["status_reason"]


def test_non_finite_final_metrics_are_diverged(tmp_path, monkeypatch):
    """An update that leaves the weights non-finite after the last step's loss was finite."""
    from benchmarks import train as T
    from benchmarks.loop import train_step

    def poisoned(model, task, batch, opt, grad_clip=None):
        r = train_step(model, task, batch, opt, grad_clip)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return r

    monkeypatch.setattr(T, "train_step", poisoned)
    T.run(_cfg(tmp_path, "steps=1"), "stu", "lds", [])
    rec = json.loads(next(tmp_path.rglob("record.json")).read_text())
    assert rec["status"] == "diverged" and "non-finite evaluation" in rec["status_reason"]


def test_corrupt_record_is_named_set_aside_and_rerun(tmp_path, capsys):
    from benchmarks.train import run

    cfg = _cfg(tmp_path)
    run(cfg, "stu", "lds", [])
    rec = next(tmp_path.rglob("record.json"))
    rec.write_text("{ not json")
    run(cfg, "stu", "lds", [])
    err = capsys.readouterr().err
    assert "[corrupt]" in err and str(rec) in err
    assert json.loads(rec.read_text())["status"] == "ok"
    assert len(list(rec.parent.glob("record.corrupt-*.json"))) == 1
    # the report names a corrupt record and goes on
    rec.write_text("garbage")
    assert runs.read_records(tmp_path) == []
    assert str(rec) in capsys.readouterr().err


def test_claimed_run_is_not_trained_twice_and_leftovers_are_cleaned(tmp_path, capsys):
    from benchmarks.config import identity
    from benchmarks.train import run

    cfg = _cfg(tmp_path)
    folder = identity(cfg, "stu", "lds", [])["dir"]
    with runs.Claim(folder):  # another process holds it
        assert math.isnan(run(cfg, "stu", "lds", []))  # skipped as busy: no value
        with pytest.raises(runs.Busy):
            runs.Claim(folder).__enter__()
    assert "[busy]" in capsys.readouterr().err and not (folder / "record.json").exists()
    leftover = folder / ".record.json.x1y2.tmp"
    leftover.write_text("partial")
    run(cfg, "stu", "lds", [])
    assert (folder / "record.json").exists() and not leftover.exists()


def test_set_aside_names_never_collide(tmp_path):
    kept = []
    for _ in range(5):
        f = tmp_path / "record.json"
        f.write_text("x")
        kept.append(runs.set_aside(f, "forced"))
    assert len(set(kept)) == 5 and all(k.exists() for k in kept)


def test_atomic_torch_save_leaves_nothing_on_failure(tmp_path, monkeypatch):
    def full_disk(obj, f, *a, **k):
        pathlib.Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        runs.atomic_torch_save({"a": 1}, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_normalises_values():
    a = runs.fingerprint({"lr": 1e-3, "steps": 5, "wd": 1.0})
    assert a == runs.fingerprint({"lr": 0.001, "steps": 5, "wd": 1})
    assert a != runs.fingerprint({"lr": 0.002, "steps": 5, "wd": 1})


def test_plateau_says_whether_curves_flattened():
    """The summary's last-quarter change: the median over trials of (last point - point at 3/4)."""
    import pandas as pd

    from benchmarks.report import plateau

    steps = list(range(10, 110, 10))
    rows = []
    for seed in (0, 1):
        rows += [{"setting": "flat", "seed": seed, "step": s, "eval_accuracy": min(1.0, s / 50)} for s in steps]
        rows += [{"setting": "rising", "seed": seed, "step": s, "eval_accuracy": s / 100} for s in steps]
    summary = pd.DataFrame([{"setting": "flat"}, {"setting": "rising"}])
    out = plateau(pd.DataFrame(rows), summary, {"metric": "eval_accuracy"}).set_index("setting")
    assert out.loc["flat", "flattened"] and out.loc["flat", "last_quarter_change"] == 0.0
    assert not out.loc["rising", "flattened"] and abs(out.loc["rising", "last_quarter_change"] - 0.3) < 1e-9  # 1.0 - 0.7 (step 70: nearest to 75, first of the tie)
    # log-scale metrics: relative change
    lds = [{"setting": "x", "seed": 0, "step": s, "eval_mse": 1.0 / s} for s in steps]
    rel = plateau(pd.DataFrame(lds), pd.DataFrame([{"setting": "x"}]), {"metric": "eval_mse", "log_y": True})
    assert abs(rel["last_quarter_change"].iloc[0] - (1 / 100 - 1 / 70) / (1 / 70)) < 1e-9


def test_a_dirty_tree_stores_its_diff_beside_the_record(tmp_path, monkeypatch):
    """Provenance: outputs (results/, plots/) never make the commit dirty; a really dirty tree
    stores its diff (git.diff) beside the record."""
    from benchmarks import records
    from benchmarks.train import run

    monkeypatch.setattr(records, "git_commit", lambda: "abc123-dirty")
    import benchmarks.train as T

    monkeypatch.setattr(T, "git_commit", lambda: "abc123-dirty")
    run(_cfg(tmp_path), "stu", "lds", [])
    rec_path = next(tmp_path.rglob("record.json"))
    rec = json.loads(rec_path.read_text())
    assert rec["git_commit"].endswith("-dirty") and rec["git_diff"] == "git.diff"
    assert (rec_path.parent / "git.diff").exists()
    assert records.save_diff(tmp_path, "abc123") is None  # a clean commit stores nothing
    from benchmarks.report import report

    report("adhoc", "smoke", tmp_path, tmp_path / "res", tmp_path / "plots", rep={"metric": "eval_mse"}, quiet=True)
    assert len(list((tmp_path / "res" / "adhoc" / "smoke" / "diffs").glob("*.diff"))) == 1


def test_the_sweep_progress_counts_finished_runs_under_any_launcher(tmp_path, capsys):
    """benchmarks.reproduce.watch reads the run folders (not a launcher's output): it counts the
    records that appear while it watches and reports the total."""
    import threading

    from benchmarks.reproduce import watch

    jobs = [{"fingerprint": f"fp{i}", "dir": str(tmp_path / f"run{i}")} for i in range(3)]
    (tmp_path / "run0").mkdir()
    (tmp_path / "run0" / "record.json").write_text("{}")
    stop = threading.Event()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("n", watch(jobs, stop, every=0.05)))
    t.start()
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "record.json").write_text("{}")
    stop.set()
    t.join(5)
    assert out["n"] == 2
    assert "[sweep] runs finished" in capsys.readouterr().err
