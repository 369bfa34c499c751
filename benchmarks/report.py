"""Gather run records into tidy tables under ``results/`` and draw each figure under ``plots/``.

    python -m benchmarks.report fig2_lds [--profile smoke] [--runs runs] [--results results] [--plots plots]

For an experiment ``E`` (a ``conf/experiment/E.yaml``) and a profile ``P`` it reads every
``record.json`` and ``curve.csv`` under ``<runs>/P/E/`` and writes (``results/E/P/`` below is
written ``results/E/`` in short)

* ``results/E/runs.csv``      one row per run: model, seed, status, final metric, params, wall time,
                              backends, device, git commit, profile;
* ``results/E/records.jsonl`` the full records (config, versions, ...), so the numbers travel with
                              their provenance;
* ``results/E/curves.csv``    the learning curves, tidy (model, seed, step, metric...);
* ``results/E/summary.md``    final metric per model (mean, spread, trials that solved the task) and
                              the figure's qualitative claims, each marked as holding or not;
* ``plots/E_P.png``           the figure in the paper's layout: one curve per model, mean with a
                              min-max band over trials, log scale where the paper's figure has it.
"""
from __future__ import annotations

import argparse
import json
import os
import math
import pathlib
import sys
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from benchmarks.records import REPO, atomic_write_text, read_records

MODEL_ORDER = ["robotics_stu", "robotics_stu_t", "robotics_transformer", "robotics_mamba2",
               "stu", "stu_t", "s4d", "mamba2", "transformer", "transformer_moe", "mamba2_moe", "flash_stu",
               "mamba2_hybrid"]
LABELS = {"stu": "STU", "stu_t": "STU-T", "s4d": "S4D", "mamba2": "Mamba-2", "transformer": "Attention",
          "transformer_moe": "Transformer (MoE)", "mamba2_moe": "Mamba-2 (MoE)", "flash_stu": "Flash STU",
          "mamba2_hybrid": "Mamba-2 hybrid", "robotics_stu": "STU", "robotics_stu_t": "STU-T",
          "robotics_transformer": "Transformer", "robotics_mamba2": "Mamba-2"}
COLORS = {"stu": "tab:blue", "stu_t": "tab:orange", "s4d": "tab:green", "mamba2": "tab:red",
          "transformer": "tab:purple", "transformer_moe": "tab:brown", "mamba2_moe": "tab:pink",
          "flash_stu": "tab:cyan", "mamba2_hybrid": "tab:olive", "robotics_stu": "tab:blue",
          "robotics_stu_t": "tab:orange", "robotics_transformer": "tab:purple", "robotics_mamba2": "tab:red"}


def experiment_report_config(name: str) -> dict[str, Any]:
    path = REPO / "conf" / "experiment" / f"{name}.yaml"
    if not path.exists():
        return {}
    cfg = OmegaConf.load(path)
    return OmegaConf.to_container(cfg.get("report", {}), resolve=False) or {}


def _order(models) -> list[str]:
    return sorted(models, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m))


def gather(runs_root: pathlib.Path, experiment: str) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    records = read_records(runs_root / experiment)
    rows, curves = [], []
    for r in records:
        fm = r.get("final_metrics", {})
        rows.append({
            "experiment": r.get("experiment"), "task": r.get("task"), "model": r.get("model"),
            "seed": r.get("seed"), "status": r.get("status"), "steps": r.get("steps_done"),
            "primary_metric": r.get("primary_metric"), "final": r.get("primary_value"),
            **{f"final_{k}": v for k, v in fm.items()},
            "params": r.get("params"), "wall_time_s": r.get("wall_time_s"), "s_per_step": r.get("s_per_step"),
            "backends": r.get("backends"), "device": (r.get("device") or {}).get("gpu") or (r.get("device") or {}).get("cpu"),
            "git_commit": r.get("git_commit"), "profile": r.get("profile"), "run_dir": r.get("_dir"),
        })
        cpath = pathlib.Path(r["_dir"]) / "curve.csv"
        if cpath.exists() and cpath.stat().st_size:
            try:
                c = pd.read_csv(cpath)
            except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
                print(f"warning: unreadable curve {cpath}: {e}", file=sys.stderr)
                continue
            c.insert(0, "seed", r.get("seed"))
            c.insert(0, "model", r.get("model"))
            curves.append(c)
    runs = pd.DataFrame(rows)
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return runs, curves_df, records


def _solved(values: pd.Series, rep: dict) -> pd.Series:
    if "solved_above" in rep:
        return values >= float(rep["solved_above"])
    if "solved_below" in rep:
        return values <= float(rep["solved_below"])
    return pd.Series(False, index=values.index)


def summarise(runs: pd.DataFrame, rep: dict, higher_is_better: bool) -> pd.DataFrame:
    out = []
    for model in _order(runs["model"].unique()):
        g = runs[runs["model"] == model]
        ok = g[g["status"] == "ok"]
        v = ok["final"].astype(float)
        out.append({
            "model": model, "label": LABELS.get(model, model), "trials": len(g),
            "diverged": int((g["status"] != "ok").sum()),
            "mean": v.mean(), "std": v.std(ddof=0) if len(v) else math.nan,
            "min": v.min(), "median": v.median(), "max": v.max(),
            # a diverged trial counts as not solved
            "solved": int(_solved(v, rep).sum()),
            "params": int(g["params"].iloc[0]) if len(g) else 0,
            "s_per_step": g["s_per_step"].median(),
        })
    return pd.DataFrame(out)


def check_claims(summary: pd.DataFrame, rep: dict, higher_is_better: bool) -> list[tuple[str, bool | None, str]]:
    """Evaluate the experiment's ``report.checks``; returns (claim, holds, evidence)."""
    s = summary.set_index("model")
    results = []

    def better(a, b):
        return s.loc[a, "mean"] > s.loc[b, "mean"] if higher_is_better else s.loc[a, "mean"] < s.loc[b, "mean"]

    for chk in rep.get("checks", []) or []:
        (kind, models), = chk.items()
        missing = [m for m in models if m not in s.index]
        if missing:
            results.append((f"{kind} {models}", None, f"no runs for {missing}"))
            continue
        lab = [LABELS.get(m, m) for m in models]
        if kind == "all_solved":
            holds = all(s.loc[m, "solved"] == s.loc[m, "trials"] for m in models)
            ev = ", ".join(f"{LABELS.get(m, m)} {s.loc[m, 'solved']}/{s.loc[m, 'trials']}" for m in models)
            results.append((f"{' and '.join(lab)} {'solves' if len(lab) == 1 else 'solve'} every trial", holds, ev))
        elif kind == "solved_any":
            holds = all(s.loc[m, "solved"] > 0 for m in models)
            ev = ", ".join(f"{LABELS.get(m, m)} {s.loc[m, 'solved']}/{s.loc[m, 'trials']}" for m in models)
            results.append((f"{' and '.join(lab)} {'solves' if len(lab) == 1 else 'solve'} the task on some trial", holds, ev))
        elif kind == "more_solved":
            a, b = models
            holds = s.loc[a, "solved"] > s.loc[b, "solved"] or (
                s.loc[a, "solved"] == s.loc[b, "solved"] and better(a, b))
            ev = f"solved {s.loc[a, 'solved']}/{s.loc[a, 'trials']} vs {s.loc[b, 'solved']}/{s.loc[b, 'trials']}"
            results.append((f"{lab[0]} solves more reliably than {lab[1]}", bool(holds), ev))
        elif kind == "better":
            a, b = models
            ev = f"mean {s.loc[a, 'mean']:.4g} vs {s.loc[b, 'mean']:.4g}"
            results.append((f"{lab[0]} beats {lab[1]}", bool(better(a, b)), ev))
        elif kind == "best":
            ranked = summary.sort_values("mean", ascending=not higher_is_better)["model"].tolist()
            top = ranked[: len(models)]
            holds = set(top) == set(models)
            ev = "ranking: " + " > ".join(LABELS.get(m, m) for m in ranked)
            results.append((f"{' and '.join(lab)} {'is' if len(lab) == 1 else 'are'} the best", holds, ev))
        else:
            results.append((f"{kind} {models}", None, "unknown check"))
    return results


def plot(curves: pd.DataFrame, rep: dict, path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = rep.get("metric", "eval_loss")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    for model in _order(curves["model"].unique()):
        c = curves[curves["model"] == model]
        if metric not in c:
            continue
        g = c.groupby("step")[metric]
        mean, lo, hi = g.mean(), g.min(), g.max()
        n = c["seed"].nunique()
        color = COLORS.get(model)
        ax.plot(mean.index, mean.values, label=f"{LABELS.get(model, model)} (n={n})", color=color, lw=1.6)
        ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.18, lw=0)
    if rep.get("log_y"):
        ax.set_yscale("log")
    if "solved_above" in rep:
        ax.axhline(float(rep["solved_above"]), color="grey", ls=":", lw=0.8)
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric.replace("eval_", "evaluation ").replace("_", " "))
    finish_plot(fig, ax, title, path)


def finish_plot(fig, ax, title: str, path: pathlib.Path, legend_cols: int = 1) -> None:
    """Title, grid and legend in the suite's style; write the PNG (making its folder) and close."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8 if legend_cols == 1 else 7, frameon=False, ncol=legend_cols)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _fmt(x, digits=4):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def write_summary(experiment: str, runs: pd.DataFrame, summary: pd.DataFrame, claims, rep: dict,
                  records: list[dict], path: pathlib.Path, plot_rel: str) -> str:
    metric = runs["primary_metric"].iloc[0]
    hib = bool(records[0].get("higher_is_better", True))
    lines = [f"# {rep.get('title', experiment)}", ""]
    profiles = sorted(set(runs["profile"].dropna()))
    devices = sorted(set(runs["device"].dropna().astype(str)))
    commits = sorted(set(runs["git_commit"].dropna()))
    backends = sorted(set(runs["backends"].dropna()))
    lines += [f"Profile: **{', '.join(profiles)}**. Device: {', '.join(devices)}. "
              f"Commit(s): {', '.join(sorted({c[:12] + (' (with uncommitted changes)' if c.endswith('-dirty') else '') for c in commits}))}. Backends: {'; '.join(backends)}.",
              f"Final {metric} ({'higher' if hib else 'lower'} is better) over trials; "
              "a diverged trial counts as unsolved and is excluded from the mean.", "",
              f"![{experiment}]({plot_rel})", "",
              "| model | params | trials | mean | std | min | median | max | solved | diverged | s/step |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['label']} | {r['params']:,} | {r['trials']} | {_fmt(r['mean'])} | {_fmt(r['std'])} | "
                     f"{_fmt(r['min'])} | {_fmt(r['median'])} | {_fmt(r['max'])} | {r['solved']}/{r['trials']} | "
                     f"{r['diverged']} | {_fmt(r['s_per_step'], 3)} |")
    thr = rep.get("solved_above", rep.get("solved_below"))
    if thr is not None:
        lines += ["", f"'Solved' means final {metric} {'>=' if 'solved_above' in rep else '<='} {thr}."]
    if rep.get("claim"):
        lines += ["", "## The paper's claim", "", f"> {rep['claim']}", ""]
    if claims:
        lines += ["| check | at this size | evidence |", "|---|---|---|"]
        for text, holds, ev in claims:
            verdict = "holds" if holds else ("no runs" if holds is None else "**does not hold**")
            lines.append(f"| {text} | {verdict} | {ev} |")
        if any(h is False for _, h, _ in claims):
            lines += ["", "Where a check does not hold, this run (profile "
                      f"{', '.join(profiles)}) does not reproduce that part of the paper's figure; "
                      "smoke runs train far fewer steps and trials than the paper."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    return text


def report(experiment: str, profile: str = "smoke", runs_root="runs", results_root="results",
           plots_root="plots") -> dict[str, pathlib.Path]:
    runs_root, results_root, plots_root = map(pathlib.Path, (runs_root, results_root, plots_root))
    runs, curves, records = gather(runs_root / profile, experiment)
    if runs.empty:
        raise SystemExit(f"no run records under {runs_root / profile / experiment}; run the experiment first "
                         f"(python -m benchmarks.train experiment={experiment} profile={profile})")
    rep = experiment_report_config(experiment)
    rep.setdefault("metric", "eval_" + str(runs["primary_metric"].iloc[0]))
    hib = bool(records[0].get("higher_is_better", True))
    out_dir = results_root / experiment / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = runs.sort_values(["model", "seed"]).reset_index(drop=True)
    runs_csv, curves_csv = out_dir / "runs.csv", out_dir / "curves.csv"
    atomic_write_text(runs_csv, runs.to_csv(index=False))
    atomic_write_text(curves_csv, curves.to_csv(index=False))
    atomic_write_text(out_dir / "records.jsonl",
                      "".join(json.dumps({k: v for k, v in r.items() if k != "_dir"}, sort_keys=True, default=str) + "\n"
                              for r in records))
    summary = summarise(runs, rep, hib)
    atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    claims = check_claims(summary, rep, hib)
    png = plots_root / f"{experiment}_{profile}.png"
    if not curves.empty:
        plot(curves, rep, png, rep.get("title", experiment))
    try:
        plot_rel = os.path.relpath(png.resolve(), out_dir.resolve())
    except ValueError:
        plot_rel = str(png)
    md = write_summary(experiment, runs, summary, claims, rep, records, out_dir / "summary.md", plot_rel)
    print(md)
    return {"runs": runs_csv, "curves": curves_csv, "summary": out_dir / "summary.md", "plot": png}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="+", help="experiment names (conf/experiment/<name>.yaml)")
    ap.add_argument("--profile", default="smoke", help="smoke | paper (which runs to gather)")
    ap.add_argument("--runs", default=None, help="root of run folders (default: $FSB_RUNS or runs)")
    ap.add_argument("--results", default="results")
    ap.add_argument("--plots", default="plots")
    a = ap.parse_args(argv)
    runs = a.runs or os.environ.get("FSB_RUNS", "runs")
    for e in a.experiments:
        report(e, a.profile, runs, a.results, a.plots)


if __name__ == "__main__":
    main()
