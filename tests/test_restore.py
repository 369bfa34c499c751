"""A fresh clone resumes a sweep from the committed results (benchmarks.restore): the finished runs of
``results/<E>/<profile>/`` get their folders back, are not trained again, and the report regenerates
the same files; a record that is not exactly the job's, a run that keeps its weights and
``force=true`` are not restored."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pandas as pd

from benchmarks import restore as rs
from benchmarks.runs import fingerprint

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ["experiment=fig4", "profile=smoke", "model=stu,transformer", "trials=2", "steps=4", "eval_every=2",
        "eval_size=8", "batch_size=4", "threads=1", "progress=false", "device=cpu"]
FILES = ["records.jsonl", "runs.csv", "curves.csv", "summary.csv", "summary.md"]


def reproduce(root: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    args = [*TINY, f"paths.runs={root}/runs", f"paths.results={root}/results", f"paths.plots={root}/plots",
            f"paths.data={root}/data", *extra]
    p = subprocess.run([sys.executable, "-m", "benchmarks.reproduce", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr[-4000:]
    return p


def test_a_fresh_clone_resumes_from_committed_results_and_regenerates_them(tmp_path):
    first = reproduce(tmp_path)
    assert first.stderr.count("[ok]") == 4 and "[restore]" not in first.stderr
    res = tmp_path / "results" / "fig4" / "smoke"
    before = {f: (res / f).read_text() for f in FILES}
    curves = {p.relative_to(tmp_path / "runs"): pd.read_csv(p) for p in (tmp_path / "runs").rglob("curve.csv")}
    shutil.rmtree(tmp_path / "runs")  # what a fresh clone has: results/, no runs/

    again = reproduce(tmp_path)
    assert "[restore] 4 finished run(s) restored" in again.stderr
    assert "[ok]" not in again.stderr and again.stderr.count("[skip]") == 4, again.stderr[-3000:]
    for f in FILES:
        assert (res / f).read_text() == before[f], f"{f} changed after restoring"
    for rel, frame in curves.items():
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "runs" / rel), frame)
        note = json.loads((tmp_path / "runs" / rel.parent / "restored.json").read_text())
        assert note["fingerprint"] == json.loads((tmp_path / "runs" / rel.parent / "record.json").read_text())[
            "config_fingerprint"]

    # force=true trains them again (and restores nothing)
    shutil.rmtree(tmp_path / "runs")
    forced = reproduce(tmp_path, "force=true", "model=stu", "trials=1")
    assert "[restore]" not in forced.stderr and forced.stderr.count("[ok]") == 1


def _committed(tmp_path, recs: list[dict], curves: str | None = None) -> pathlib.Path:
    d = tmp_path / "results" / "E" / "smoke"
    d.mkdir(parents=True)
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    if curves is not None:
        (d / "curves.csv").write_text(curves)
    return d


def _record(seed: int, **config) -> dict:
    spec = {"model": {"width": 8}, "seed": seed}
    return {"status": "ok", "spec": spec, "config_fingerprint": fingerprint(spec), "model": "stu",
            "setting_fingerprint": "s1", "seed": seed, "config": config}


def test_only_records_that_are_exactly_the_jobs_are_restored(tmp_path, capsys):
    good, stale, weights = _record(0), _record(1), _record(2, save_model=True)
    stale["spec"]["model"]["width"] = 16  # its spec no longer hashes to its fingerprint
    curves = "model,setting,seed,step,train_loss,eval_loss\nstu,s1,0,1,0.5,\nstu,s1,0,2,0.25,0.125\n" \
             "stu,s1,1,1,0.5,\nstu,s1,2,1,0.5,\n"
    d = _committed(tmp_path, [good, stale, weights], curves)
    assert set(rs.committed_records(d)) == {good["config_fingerprint"], weights["config_fingerprint"]}
    assert "no longer hashes" in capsys.readouterr().err
    jobs = [{"fingerprint": r["config_fingerprint"], "dir": tmp_path / "runs" / f"seed{r['seed']}", "cfg": {}}
            for r in (good, stale, weights)]
    jobs.append({"fingerprint": "0" * 16, "dir": tmp_path / "runs" / "other", "cfg": {}})  # not committed
    done = rs.restore(jobs, d)
    assert done == [tmp_path / "runs" / "seed0"]
    assert "not: keeps its weights" in capsys.readouterr().err
    rec = json.loads((done[0] / "record.json").read_text())
    assert rec == good
    assert (done[0] / "curve.csv").read_bytes() == b"step,train_loss,eval_loss\r\n1,0.5,\r\n2,0.25,0.125\r\n"
    # a folder that already has a record is left alone; force restores nothing
    assert rs.restore(jobs, d) == [] and rs.restore(jobs[1:], d, force=True) == []


def test_a_record_without_its_curve_rows_is_not_restored(tmp_path, capsys):
    d = _committed(tmp_path, [_record(0)], "model,setting,seed,step\nstu,other,0,1\n")
    job = {"fingerprint": _record(0)["config_fingerprint"], "dir": tmp_path / "runs" / "seed0", "cfg": {}}
    assert rs.restore([job], d) == [] and not (tmp_path / "runs").exists()
    assert "no curve rows" in capsys.readouterr().err
