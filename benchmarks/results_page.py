"""The results page, ``results/README.md``, generated from the committed results and their records.

    make results-page        (= python -m benchmarks.results_page)

For every ``conf/experiment/<E>.yaml`` and every profile folder ``results/<E>/<profile>/`` that
exists, the page gives what the suite measured beside what the paper states, and the verdict of
each claim, recomputed here from the records (never copied from a hand-written table):

* figure sweeps (``kind: train``, synthetic): each model's final metric over trials (from
  ``records.jsonl``), how many trials solved the task, whether the curves flattened
  (``curves.csv``), and the experiment's claim checks (:func:`benchmarks.report.check_claims`);
  the paper gives these figures as plots only, so its claim is quoted;
* robotics tables (``report.kind: robotics | ablation``): the table of ``table.md`` (ours beside
  the paper's numbers of ``benchmarks/paper_tables.yaml``) and its orderings line;
* the other kinds (landscapes, filters, timings, speed, trial batching, sensitivity): their headline
  numbers from ``record.json`` and links;
* under each profile, the experiment's commentary (``report.notes.<profile>`` of its YAML: what a
  reader should take from the numbers, written by hand and shown as such).

``--check`` (used by the tests) exits 1 when the committed page differs from a fresh generation.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys
from typing import Any

import pandas as pd

from benchmarks.records import REPO, atomic_write_text
from benchmarks.report import LABELS, check_claims, experiment_report_config, plateau, runs_frame, summarise

RESULTS = REPO / "results"
PLOTS = REPO / "plots"
ORDER = ["fig2", "fig3_landscape", "fig4", "fig5", "fig5_adjacent", "fig5_zoology", "fig5_safari", "fig14",
         "fig14_copy4", "sensitivity", "fig12_filters", "table1_timing", "table2", "table6", "table7", "table8",
         "table9", "table10", "fig24_landscape", "speed", "trial_batching"]


def _experiments() -> list[str]:
    names = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("[!_]*.yaml"))
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def _kind(name: str) -> str:
    from benchmarks.config import compose

    cfg = compose([f"experiment={name}"])
    kind = str(cfg.kind)
    if kind == "train":
        return str((cfg.report or {}).get("kind", "curves"))
    return kind


def _fmt(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _verdict(h) -> str:
    return "holds" if h is True else ("**does not hold**" if h is False else "not checked")


def _plots(name: str, profile: str) -> list[str]:
    folder = PLOTS / name / profile
    return sorted(f"../plots/{name}/{profile}/{p.name}" for p in folder.glob("*.png")) if folder.exists() else []


def curves_section(name: str, profile: str, folder: pathlib.Path) -> list[str]:
    recs = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line.strip()]
    if not recs:
        return ["No records."]
    rep = experiment_report_config(name)
    rep.setdefault("metric", "eval_" + str(recs[0].get("primary_metric")))
    runs = runs_frame(recs)
    hib = bool(recs[0].get("higher_is_better", True))
    curves = pd.read_csv(folder / "curves.csv") if (folder / "curves.csv").exists() else pd.DataFrame()
    if not curves.empty and "setting" not in curves.columns:
        curves["setting"] = curves["model"].map(lambda m: f"model:{m}")
    summary = plateau(curves, summarise(runs, rep, hib), rep)
    metric = str(recs[0].get("primary_metric"))
    lines = [f"| model | trials | mean final {metric} | min - max | solved | curves flat |", "|---|---:|---:|---:|---:|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['label']} | {r['trials']} | {_fmt(r['mean'])} | {_fmt(r['min'])} - {_fmt(r['max'])} | "
                     f"{r['solved']}/{r['trials']} | {'yes' if r['flattened'] else 'no'} |")
    commits = sorted({str(r.get("git_commit", ""))[:12] for r in recs})
    devices = sorted({str(d.get("gpu") or d.get("cpu")) if isinstance(d, dict) else str(d)
                      for d in (r.get("device") or {} for r in recs)})
    lines += ["", f"{len(recs)} runs; commit(s) {', '.join(commits)}; device(s) {', '.join(devices)}; "
              f"steps {sorted({r.get('steps_done') for r in recs})}."]
    if rep.get("claim"):
        lines += ["", f"The paper's claim (its figure gives no numbers): *{rep['claim']}*", "",
                  "| check | verdict | evidence |", "|---|---|---|"]
        for text, holds, ev in check_claims(summary, rep, hib):
            lines.append(f"| {text} | {_verdict(holds)} | {ev} |")
    return lines


def table_section(folder: pathlib.Path) -> list[str]:
    md = (folder / "table.md").read_text().splitlines() if (folder / "table.md").exists() else []
    start = next((i for i, line in enumerate(md) if line.startswith("| ")), None)
    if start is None:
        return ["No table."]
    end = start
    while end < len(md) and md[end].startswith("|"):
        end += 1
    out = md[start:end]
    orderings = [line for line in md if line.startswith("## The paper's orderings")]
    if orderings:
        out += ["", orderings[0].lstrip("# ") + "."]
    return out


def record_section(name: str, kind: str, folder: pathlib.Path) -> list[str]:
    path = folder / "record.json"
    if not path.exists():
        return ["No record."]
    rec = json.loads(path.read_text())
    dev = rec.get("device") or {}
    dev = dev if isinstance(dev, dict) else {"cpu": str(dev)}
    where = f"commit {str(rec.get('git_commit', ''))[:12]}, {dev.get('gpu') or dev.get('cpu') or ''}, {_fmt(rec.get('wall_time_s'))} s"
    if kind == "landscape" and isinstance(rec.get("summary"), dict):
        lines = ["| model | loss at the centre | max/min of the loss on the grid | mean Hessian ratio (lambda_min / lambda_max, absolute) |",
                 "|---|---:|---:|---:|"]
        for m, v in rec["summary"].items():
            lines.append(f"| {LABELS.get(m, m)} | {_fmt(v.get('loss_at_centre'))} | {_fmt(v.get('loss_max_over_min'))} | "
                         f"{_fmt(v.get('mean_hess_ratio'))} |")
        return lines + ["", where + "."]
    if kind == "timing" and isinstance(rec.get("summary"), dict):
        return table_section(folder) + ["", where + "."]
    if kind == "trial_batching":
        lines = ["| setting | model | one by one (ms / trial-step) | batched | speedup |", "|---|---|---:|---:|---:|"]
        for r in rec.get("rows", []):
            lines.append(f"| {r['setting']} | {LABELS.get(r['model'], r['model'])} | {_fmt(r['one_by_one_ms_per_trial_step'])} | "
                         f"{_fmt(r.get('batched_ms_per_trial_step'))} | {_fmt(r.get('speedup'), 3)} |")
        return lines + ["", where + "."]
    if kind == "sensitivity":
        lines = ["| figure | variant | claim | verdict |", "|---|---|---|---|"]
        for fig, res in (rec.get("results") or {}).items():
            for label, v in res["variants"].items():
                for c in v.get("claims", []):
                    lines.append(f"| {fig} | {label}{' (default)' if label == res['default'] else ''} | {c['claim']} | "
                                 f"{_verdict(c['holds'])} |")
        return lines + ["", where + "."]
    return [f"Record: [`record.json`]({name}/{folder.name}/record.json); {where}."]


def _title(name: str) -> str:
    """The report title, else the experiment file's description (its second line)."""
    title = experiment_report_config(name).get("title")
    if title:
        return str(title)
    lines = (REPO / "conf" / "experiment" / f"{name}.yaml").read_text().splitlines()
    return lines[1].lstrip("# ").rstrip(".:") if len(lines) > 1 and lines[1].startswith("#") else name


def generate() -> str:
    lines = ["# Results", "",
             "Generated by `make results-page` (`python -m benchmarks.results_page`) from the committed results "
             "and their records; do not edit by hand. Every number here was measured by the suite; the paper's "
             "appear only as labelled references (`benchmarks/paper_tables.yaml`), in the tables that have them. "
             "The manual is the [README](../README.md).", ""]
    for name in _experiments():
        folder = RESULTS / name
        if not folder.exists():
            continue
        profiles = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name in ("smoke", "paper"))
        if not profiles:
            continue
        kind = _kind(name)
        title = _title(name)
        lines += [f"## {title} (`{name}`)", ""]
        for profile in profiles:
            f = folder / profile
            lines += [f"### {profile} profile", ""]
            if kind == "curves" and (f / "records.jsonl").exists():
                body = curves_section(name, profile, f)
            elif kind in ("robotics", "ablation"):
                body = table_section(f)
            else:
                body = record_section(name, kind, f)
            lines += body + [""]
            notes = (experiment_report_config(name).get("notes") or {}).get(profile) or []
            if notes:
                lines += [f"Commentary (written by hand in `conf/experiment/{name}.yaml`, `report.notes.{profile}`; "
                          "the numbers above are generated):", ""]
                lines += [f"- {n.strip()}" for n in notes] + [""]
            for p in _plots(name, profile):
                lines += [f"![{name} {profile}]({p})", ""]
    lines += gpu_sections()
    lines += lm_sections()
    return "\n".join(lines).rstrip() + "\n"


def gpu_sections() -> list[str]:
    """What ``make gpu-check`` measured (``results/gpu/<experiment>/<profile>/``), with its records;
    ``results/gpu/README.md`` says what ran and what is left."""
    root = RESULTS / "gpu"
    out: list[str] = []
    for name in _experiments():
        for profile in ("smoke", "paper"):
            f = root / name / profile
            if not (f / "record.json").exists():
                continue
            if not out:
                out = ["## On a GPU (`make gpu-check`)", "",
                       "What the GPU lease measured; [`gpu/README.md`](gpu/README.md) says what ran, what passed and "
                       "what is left.", ""]
            out += [f"### {_title(name)} (`{name}`), {profile} profile", ""]
            out += record_section(f"gpu/{name}", _kind(name), f) + [""]
            for png in _plots(f"gpu/{name}", profile):
                out += [f"![{name} gpu]({png})", ""]
    return out


def lm_sections() -> list[str]:
    """Section IV (``lm/reproduce.py`` writes ``results/lm/<profile>/table.md``): its table, beside the
    paper's Table IV/V as references, and its figures."""
    out: list[str] = []
    for profile in ("smoke", "paper"):
        folder = RESULTS / "lm" / profile
        if not (folder / "table.md").exists():
            continue
        if not out:
            out = ["## Section IV: language modelling, Tables IV/V and Figures 10/11 (`make reproduce-lm`)", ""]
        out += [f"### {profile} profile", ""] + table_section(folder) + [""]
        for p in _plots("lm", profile):
            out += [f"![lm {profile}]({p})", ""]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    page = generate()
    path = RESULTS / "README.md"
    if "--check" in argv:
        same = path.exists() and path.read_text() == page
        print("results/README.md is up to date" if same else "results/README.md is stale: run make results-page",
              file=sys.stderr)
        return 0 if same else 1
    atomic_write_text(path, page)
    print(f"wrote {path} ({len(page.splitlines())} lines)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
