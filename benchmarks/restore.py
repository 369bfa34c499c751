"""Finished runs made again from committed results, so a fresh clone resumes a sweep instead of
training what is already in ``results/``.

Run folders (``runs/``) are not committed; ``results/<E>/<profile>/`` is: ``records.jsonl`` (every
record in full, with its spec and fingerprint), ``curves.csv`` (every run's curve) and ``diffs/``.
Before a sweep runs, :func:`restore` writes back the folder of each job that has no record yet and
whose fingerprint is in the committed records: ``record.json`` (the committed record, unchanged: its
commit, device and wall time are those of the machine that trained it), ``curve.csv`` (its rows of
``curves.csv``, as written there) and its ``git.diff`` when the record names one, plus
``restored.json`` saying where they came from. The runner then skips the run as finished, and the
report regenerates the committed files from the same records.

Runs that keep their weights (``save_model``: the robotics runs) are restored only with their
committed prediction evaluation (``evaluations/<folder>/evaluation_P<P>_n<N>.npz``, written by the
robotics report), since ``model.pt`` is not committed; one without it is trained again.

A record is restored only when it is exactly this job's: the fingerprint recomputed from its stored
spec must be the job's fingerprint (a record whose spec no longer hashes to it, e.g. after a change of
what a run computes, is left alone and the run trains again). Not restored: runs without their curve
rows, runs that keep their weights but have no committed evaluation, and anything under
``force=true``.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import sys
from collections import Counter
from typing import Any

from benchmarks.records import atomic_write_json, atomic_write_text, git_commit
from benchmarks.runs import fingerprint


def committed_records(results_dir: pathlib.Path) -> dict[str, dict[str, Any]]:
    """The records of ``<results>/<E>/<profile>/records.jsonl`` by fingerprint (unreadable lines and
    records whose spec does not hash to their fingerprint are left out, with a warning)."""
    path = pathlib.Path(results_dir) / "records.jsonl"
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"warning: {path}:{n}: unreadable record ({e}); not restored", file=sys.stderr)
            continue
        fp = rec.get("config_fingerprint")
        if not isinstance(rec, dict) or "spec" not in rec or not fp:
            continue
        if fingerprint(rec["spec"]) != fp:
            print(f"warning: {path}:{n}: its spec no longer hashes to {fp}; not restored", file=sys.stderr)
            continue
        out[fp] = rec
    return out


def committed_curves(results_dir: pathlib.Path) -> dict[tuple[str, str, str], str]:
    """Each run's rows of ``curves.csv`` as the text of its own ``curve.csv``, keyed by (model, setting
    fingerprint, seed); values are copied as written (no float parsing), empty columns dropped."""
    import csv

    path = pathlib.Path(results_dir) / "curves.csv"
    if not path.is_file() or not path.stat().st_size:
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["setting"], r["seed"]), []).append(r)
    cols = [c for c in rows[0] if c not in ("model", "setting", "seed")]
    out = {}
    for key, rs in groups.items():
        keep = [c for c in cols if any((r.get(c) or "") != "" for r in rs)]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")  # as benchmarks.records.atomic_write_csv writes
        w.writerow(keep)
        w.writerows([[r.get(c, "") for c in keep] for r in rs])
        out[key] = buf.getvalue()
    return out


def restore(jobs: list[dict[str, Any]], results_dir: pathlib.Path, force: bool = False,
            quiet: bool = False) -> list[pathlib.Path]:
    """Write back the folders of ``jobs`` (from :func:`benchmarks.config.check_jobs`) that have no
    record and whose finished run is committed under ``results_dir``; returns the folders restored."""
    if force:
        return []
    results_dir = pathlib.Path(results_dir)
    wanted = {j["fingerprint"]: j for j in jobs if not (pathlib.Path(j["dir"]) / "record.json").exists()}
    if not wanted:
        return []
    recs = committed_records(results_dir)
    hits = {fp: recs[fp] for fp in wanted if fp in recs}
    if not hits:
        return []
    curves = committed_curves(results_dir)
    done, skipped = [], Counter()
    commit = git_commit()
    for fp, rec in hits.items():
        job = wanted[fp]
        folder = pathlib.Path(job["dir"])
        evaluations = sorted((results_dir / "evaluations" / folder.name).glob("*.npz"))
        keeps_weights = (rec.get("config") or {}).get("save_model") or job["cfg"].get("save_model")
        if keeps_weights and not evaluations:
            skipped["keeps its weights for an evaluation that is not committed (model.pt is not)"] += 1
            continue
        curve = curves.get((str(rec.get("model")), str(rec.get("setting_fingerprint")), str(rec.get("seed"))))
        if curve is None:
            skipped["no curve rows in curves.csv"] += 1
            continue
        for ev in evaluations if keeps_weights else []:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{ev.name}.restoring.tmp"  # copy, then an atomic rename
            shutil.copyfile(ev, tmp)
            os.replace(tmp, folder / ev.name)
        diff = rec.get("git_diff")
        if diff:
            src = results_dir / "diffs" / f"{folder.name}.diff"
            if src.is_file():
                atomic_write_text(folder / str(diff), src.read_text())
        atomic_write_text(folder / "curve.csv", curve)
        atomic_write_json(folder / "restored.json", {
            "from": str(results_dir / "records.jsonl"), "fingerprint": fp, "by_commit": commit,
            "why": "the run is finished in the committed results; its folder was made again from them "
                   "(record unchanged: commit, device and wall time are the training machine's)"})
        atomic_write_json(folder / "record.json", rec)  # last: its presence means finished
        done.append(folder)
    if not quiet and (done or skipped):
        why = "; ".join(f"{n} not: {w}" for w, n in skipped.items())
        print(f"[restore] {len(done)} finished run(s) restored from {results_dir}/records.jsonl"
              + (f" ({why})" if why else ""), file=sys.stderr, flush=True)
    return done
