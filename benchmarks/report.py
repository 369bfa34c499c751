"""Gather run records into tidy tables and draw each figure. Reads records only; never builds a model.

    python -m benchmarks.report experiment=fig2_lds profile=smoke [paths.runs=...]

For an experiment ``E`` and a profile ``P`` it reads the ``record.json`` and ``curve.csv`` of the runs
under ``<runs>/P/E/`` (``benchmarks.reproduce`` passes exactly its sweep's fingerprints) and writes

* ``<results>/E/P/runs.csv``      one row per run: model, setting, label, seed, status, final metric,
                                  params, wall time, backends, device, commit, fingerprint;
* ``<results>/E/P/records.jsonl`` the full records (config, spec, versions, ...);
* ``<results>/E/P/curves.csv``    the learning curves, tidy (model, setting, seed, step, metric...);
* ``<results>/E/P/summary.md``    one row per *setting* (the full configuration but the seed: runs
                                  that differ in anything else are never pooled, and records of
                                  several tasks are refused), the claims of ``report.checks``;
* ``<plots>/E/P/E.png``           one curve per setting, mean with a min-max band over seeds.
"""
from __future__ import annotations

import json
import os
import math
import pathlib
import sys
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from benchmarks.records import REPO, atomic_write_text
from benchmarks.runs import read_records

MODEL_ORDER = ["robotics_stu", "robotics_stu_t", "robotics_transformer", "robotics_mamba2",
               "stu", "stu_t", "stu_t_tied", "s4d", "mamba2", "transformer", "transformer_moe", "mamba2_moe", "flash_stu",
               "mamba2_hybrid"]
LABELS = {"stu": "STU", "stu_t": "STU-T", "stu_t_tied": "STU-T (tied)", "s4d": "S4D", "mamba2": "Mamba-2", "transformer": "Attention",
          "transformer_moe": "Transformer (MoE)", "mamba2_moe": "Mamba-2 (MoE)", "flash_stu": "Flash STU",
          "mamba2_hybrid": "Mamba-2 hybrid", "robotics_stu": "STU", "robotics_stu_t": "STU-T",
          "robotics_transformer": "Transformer", "robotics_mamba2": "Mamba-2"}
COLORS = {"stu": "tab:blue", "stu_t": "tab:orange", "stu_t_tied": "#e8a33d", "s4d": "tab:green", "mamba2": "tab:red",
          "transformer": "tab:purple", "transformer_moe": "tab:brown", "mamba2_moe": "tab:pink",
          "flash_stu": "tab:cyan", "mamba2_hybrid": "tab:olive", "robotics_stu": "tab:blue",
          "robotics_stu_t": "tab:orange", "robotics_transformer": "tab:purple", "robotics_mamba2": "tab:red"}


def experiment_report_config(name: str) -> dict[str, Any]:
    """The ``report:`` block of ``conf/experiment/<name>.yaml`` ({} when there is none)."""
    if not (REPO / "conf" / "experiment" / f"{name}.yaml").exists():
        return {}
    from benchmarks.config import compose  # composed, so defaults such as _ablation.yaml are merged

    return OmegaConf.to_container(compose([f"experiment={name}"]).report, resolve=True) or {}


def _order(models) -> list[str]:
    return sorted(models, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _short(key: str, flat: dict[str, Any]) -> str:
    """``model.width`` -> ``width`` unless another field ends the same way."""
    last = key.split(".")[-1]
    return last if sum(1 for k in flat if k.split(".")[-1] == last) == 1 else key


def setting_labels(records: list[dict]) -> dict[str, str]:
    """A readable label per setting: the model's name, plus every spec value that varies between
    the settings of that model (``STU (model.width=16)``), plus the mixers when they are not the
    registry model's own (``STU (model.mixers=['my_mixer'])``)."""
    import models

    by_setting: dict[str, dict] = {}
    for r in records:
        by_setting.setdefault(r["setting_fingerprint"], r)
    labels = {}
    for fp, r in by_setting.items():
        name = r["model"]
        flat = _flat({k: v for k, v in (r.get("spec") or {}).items() if k != "seed"})
        same_model = [_flat({k: v for k, v in (o.get("spec") or {}).items() if k != "seed"})
                      for o in by_setting.values() if o["model"] == name]
        varying = sorted(k for k in flat if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in same_model}) > 1)
        # name a field only where this setting differs from the value most settings share
        extra = []
        for k in varying:
            values = [json.dumps(f.get(k), sort_keys=True, default=str) for f in same_model]
            common = max(set(values), key=values.count)
            if json.dumps(flat[k], sort_keys=True, default=str) != common or values.count(common) == 1:
                extra.append(f"{_short(k, flat)}={flat[k]}")
        try:
            own = models.model_config(name).get("mixers")
        except ValueError:
            own = None
        mixers = (r.get("spec") or {}).get("model", {}).get("mixers")
        if own is not None and mixers != own and "model.mixers" not in varying:
            extra.insert(0, f"model.mixers={mixers}")
        labels[fp] = LABELS.get(name, name) + (f" ({', '.join(extra)})" if extra else "")
    return labels


def gather(runs_root: pathlib.Path, experiment: str, fingerprints: set[str] | None = None
           ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Records (and curves) of ``experiment`` under ``runs_root`` (one profile's root); with
    ``fingerprints``, only those runs (a sweep's own, so older settings do not show)."""
    records = [r for r in read_records(runs_root / experiment)
               if fingerprints is None or r.get("config_fingerprint") in fingerprints]
    runs = runs_frame(records)
    curves = []
    for r in records:
        cpath = pathlib.Path(r["_dir"]) / "curve.csv"
        if cpath.exists() and cpath.stat().st_size:
            try:
                c = pd.read_csv(cpath)
            except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
                print(f"warning: unreadable curve {cpath}: {e}", file=sys.stderr)
                continue
            c.insert(0, "seed", r.get("seed"))
            c.insert(0, "setting", r["setting_fingerprint"])
            c.insert(0, "model", r.get("model"))
            curves.append(c)
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return runs, curves_df, records


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run record (setting, label, final metrics, cost, provenance): what
    :func:`summarise` reads. Records from before setting fingerprints get one setting per model."""
    for r in records:
        r.setdefault("setting_fingerprint", f"model:{r.get('model')}")
    labels = setting_labels(records)
    rows = []
    for r in records:
        fm = r.get("final_metrics", {})
        dev = r.get("device") or {}
        rows.append({
            "experiment": r.get("experiment"), "task": r.get("task"), "model": r.get("model"),
            "setting": r["setting_fingerprint"], "label": labels[r["setting_fingerprint"]],
            "seed": r.get("seed"), "status": r.get("status"), "steps": r.get("steps_done"),
            "primary_metric": r.get("primary_metric"), "final": r.get("primary_value"),
            **{f"final_{k}": v for k, v in fm.items()},
            "params": r.get("params"), "wall_time_s": r.get("wall_time_s"), "s_per_step": r.get("s_per_step"),
            "backends": r.get("backends"), "device": (dev.get("gpu") or dev.get("cpu")) if isinstance(dev, dict) else dev,
            "git_commit": r.get("git_commit"), "profile": r.get("profile"),
            "fingerprint": r.get("config_fingerprint"), "run_dir": r.get("_dir"),
        })
    return pd.DataFrame(rows)


def _solved(values: pd.Series, rep: dict) -> pd.Series:
    if "solved_above" in rep:
        return values >= float(rep["solved_above"])
    if "solved_below" in rep:
        return values <= float(rep["solved_below"])
    return pd.Series(False, index=values.index)


def _settings_in_order(runs: pd.DataFrame) -> list[str]:
    firsts = runs.drop_duplicates("setting")
    key = {row["setting"]: (MODEL_ORDER.index(row["model"]) if row["model"] in MODEL_ORDER else 99, row["model"],
                            row["label"]) for _, row in firsts.iterrows()}
    return sorted(key, key=key.get)


def summarise(runs: pd.DataFrame, rep: dict, higher_is_better: bool) -> pd.DataFrame:
    """One row per setting (full configuration but the seed): never pools settings or tasks."""
    tasks_ = runs["task"].dropna().unique()
    if len(tasks_) > 1:
        raise ValueError(f"records of several tasks {sorted(tasks_)} in one report; report each task on its own")
    out = []
    for setting in _settings_in_order(runs):
        g = runs[runs["setting"] == setting]
        ok = g[g["status"] == "ok"]
        v = ok["final"].astype(float)
        out.append({
            "model": g["model"].iloc[0], "setting": setting, "label": g["label"].iloc[0], "trials": len(g),
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
    """Evaluate the experiment's ``report.checks``; returns (claim, holds, evidence). A claim names
    models; it is checked only where each named model has one setting in the report."""
    counts = summary["model"].value_counts()
    s = summary.drop_duplicates("model").set_index("model")
    results = []

    def better(a, b):
        return s.loc[a, "mean"] > s.loc[b, "mean"] if higher_is_better else s.loc[a, "mean"] < s.loc[b, "mean"]

    for chk in rep.get("checks", []) or []:
        (kind, models), = chk.items()
        missing = [m for m in models if m not in s.index]
        if missing:
            results.append((f"{kind} {models}", None, f"no runs for {missing}"))
            continue
        several = [m for m in models if counts.get(m, 0) > 1]
        if several:
            results.append((f"{kind} {models}", None, f"several settings of {several}: report one setting per model"))
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


def plot(curves: pd.DataFrame, rep: dict, path: pathlib.Path, title: str, labels: dict[str, str] | None = None,
         models_of: dict[str, str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = rep.get("metric", "eval_loss")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    settings = list(labels or curves["setting"].unique())
    palette = plt.get_cmap("tab10")
    for i, setting in enumerate(settings):
        c = curves[curves["setting"] == setting]
        if metric not in c or c.empty:
            continue
        model = (models_of or {}).get(setting, c["model"].iloc[0])
        g = c.groupby("step")[metric]
        mean, lo, hi = g.mean(), g.min(), g.max()
        n = c["seed"].nunique()
        one_per_model = len(settings) == len({(models_of or {}).get(x, x) for x in settings})
        color = COLORS.get(model) if one_per_model else palette(i % 10)
        ax.plot(mean.index, mean.values, label=f"{(labels or {}).get(setting, model)} (n={n})", color=color, lw=1.6)
        ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.18, lw=0)
    if rep.get("log_y"):
        ax.set_yscale("log")
    if "solved_above" in rep:
        ax.axhline(float(rep["solved_above"]), color="grey", ls=":", lw=0.8)
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric.replace("eval_", "evaluation ").replace("_", " "))
    finish_plot(fig, ax, title, path)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: pathlib.Path, title: str | None = None, dpi: int | None = None) -> None:
    """Suptitle (optional), tight layout, write the PNG (making its folder), close."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def finish_plot(fig, ax, title: str, path: pathlib.Path, legend_cols: int = 1) -> None:
    """Title, grid and legend in the suite's style; write the PNG (making its folder) and close."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > 5 or max((len(x) for x in labels), default=0) > 30:  # outside the data
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.set_size_inches(fig.get_size_inches()[0] + 2.6, fig.get_size_inches()[1])
    else:
        ax.legend(fontsize=8 if legend_cols == 1 else 7, frameon=False, ncol=legend_cols)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plateau(curves: pd.DataFrame, summary: pd.DataFrame, rep: dict) -> pd.DataFrame:
    """Did each setting's learning curves flatten? Per trial, the change of ``rep['metric']`` over
    the last quarter of training (the mean of the last tenth of the curve points minus the mean of
    as many points around 3/4 of the steps; relative to the latter when the metric is plotted on a
    log scale); the median over trials, and
    ``flattened`` when its size is at most ``rep['flat_tol']`` (0.02 absolute, or 0.1 relative)."""
    metric = rep.get("metric")
    log_y = bool(rep.get("log_y"))
    tol = float(rep.get("flat_tol", 0.1 if log_y else 0.02))
    summary = summary.copy()
    changes, flats = [], []
    for _, row in summary.iterrows():
        deltas = []
        if not curves.empty and metric in curves.columns:
            c = curves[curves["setting"] == row["setting"]]
            for _, g in c.groupby("seed"):
                g = g.sort_values("step")
                v = g[metric].astype(float).to_numpy()
                steps = g["step"].to_numpy()
                if len(v) < 4 or not math.isfinite(v[-1]):
                    continue
                k = max(1, len(v) // 10)  # windows of a tenth of the points: less evaluation noise
                i = int(abs(steps - 0.75 * steps[-1]).argmin())
                lo = max(0, i - k // 2)
                at = float(v[lo:lo + k].mean())
                d = float(v[-k:].mean()) - at
                if log_y:
                    d = d / abs(at) if at else math.inf
                deltas.append(d)
        med = float(pd.Series(deltas).median()) if deltas else math.nan
        changes.append(med)
        flats.append(bool(deltas) and abs(med) <= tol)
    summary["last_quarter_change"] = changes
    summary["flattened"] = flats
    return summary


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
              "| model | params | trials | mean | std | min | median | max | solved | diverged | s/step | last-quarter change | flat |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for _, r in summary.iterrows():
        flat = "yes" if r.get("flattened") else "**no**"
        lines.append(f"| {r['label']} | {r['params']:,} | {r['trials']} | {_fmt(r['mean'])} | {_fmt(r['std'])} | "
                     f"{_fmt(r['min'])} | {_fmt(r['median'])} | {_fmt(r['max'])} | {r['solved']}/{r['trials']} | "
                     f"{r['diverged']} | {_fmt(r['s_per_step'], 3)} | {_fmt(r.get('last_quarter_change'), 2)} | {flat} |")
    tol = float(rep.get("flat_tol", 0.1 if rep.get("log_y") else 0.02))
    lines += ["", f"Last-quarter change: the median over trials of the change of {rep.get('metric')} over the last "
              f"quarter of training ({'relative, ' if rep.get('log_y') else ''}the mean of the last tenth of the curve "
              f"points minus the mean of as many points around 3/4 of the steps); 'flat' when it is at most {tol:g} in size. A curve that is not flat has not "
              "converged at this step count."]
    thr = rep.get("solved_above", rep.get("solved_below"))
    if thr is not None:
        lines += ["", f"'Solved' means final {metric} {'>=' if 'solved_above' in rep else '<='} {thr}."]
    src = rep.get("settings_source") or []
    if src:
        lines += ["", "## Settings and where they come from", "", "| setting | value | source |", "|---|---|---|"]
        for item in src:
            lines.append(f"| {item.get('setting')} | {item.get('value')} | {item.get('source')} |")
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
           plots_root="plots", fingerprints: set[str] | None = None, rep: dict | None = None,
           quiet: bool = False) -> dict[str, pathlib.Path]:
    """Gather the runs of ``experiment`` at ``profile`` (only ``fingerprints`` when given) and write
    ``<results>/<experiment>/<profile>/`` (runs.csv, curves.csv, records.jsonl, summary.csv,
    summary.md) and ``<plots>/<experiment>/<profile>/<experiment>.png``. Reads records only."""
    runs_root, results_root, plots_root = map(pathlib.Path, (runs_root, results_root, plots_root))
    runs, curves, records = gather(runs_root / profile, experiment, fingerprints)
    if runs.empty:
        raise SystemExit(f"no run records under {runs_root / profile / experiment}; run the experiment first "
                         f"(python -m benchmarks.reproduce experiment={experiment} profile={profile})")
    rep = dict(experiment_report_config(experiment) if rep is None else rep)
    rep.setdefault("metric", "eval_" + str(runs["primary_metric"].iloc[0]))
    hib = bool(records[0].get("higher_is_better", True))
    out_dir = results_root / experiment / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = runs.sort_values(["model", "label", "seed"]).reset_index(drop=True)
    runs_csv, curves_csv = out_dir / "runs.csv", out_dir / "curves.csv"
    atomic_write_text(runs_csv, runs.to_csv(index=False))
    atomic_write_text(curves_csv, curves.to_csv(index=False))
    atomic_write_text(out_dir / "records.jsonl",
                      "".join(json.dumps({k: v for k, v in r.items() if k != "_dir"}, sort_keys=True, default=str) + "\n"
                              for r in sorted(records, key=lambda r: r["_dir"])))
    for r in records:  # runs made from a dirty tree: their diffs travel with the results
        diff = pathlib.Path(r["_dir"]) / str(r.get("git_diff") or "")
        if r.get("git_diff") and diff.is_file():
            atomic_write_text(out_dir / "diffs" / f"{pathlib.Path(r['_dir']).name}.diff", diff.read_text())
    summary = plateau(curves, summarise(runs, rep, hib), rep)
    atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    claims = check_claims(summary, rep, hib)
    png = plots_root / experiment / profile / f"{experiment}.png"
    if not curves.empty:
        labels = dict(zip(summary["setting"], summary["label"]))
        plot(curves, rep, png, f"{rep.get('title', experiment)} ({profile} profile)", labels,
             dict(zip(summary["setting"], summary["model"])))
    try:
        plot_rel = os.path.relpath(png.resolve(), out_dir.resolve())
    except ValueError:
        plot_rel = str(png)
    md = write_summary(experiment, runs, summary, claims, rep, records, out_dir / "summary.md", plot_rel)
    if not quiet:
        print(md)
    return {"runs": runs_csv, "curves": curves_csv, "summary": out_dir / "summary.md", "plot": png,
            "summary_df": summary, "claims": claims}


def main() -> None:
    """``python -m benchmarks.report experiment=<E> profile=<P> [paths.runs=...]``: every setting
    found under the runs root (``benchmarks.reproduce`` reports exactly its sweep's runs)."""
    import hydra

    from benchmarks.config import CONF_DIR

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
    def _main(cfg) -> None:
        report(str(cfg.experiment_name), str(cfg.profile.name), cfg.paths.runs, cfg.paths.results, cfg.paths.plots,
               rep=OmegaConf.to_container(cfg.report, resolve=True) or None)

    _main()


if __name__ == "__main__":
    main()
