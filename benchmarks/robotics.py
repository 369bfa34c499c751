"""Section III (robotics) tables and figures, from records and saved evaluations only.

``report.kind: robotics`` (Tables II, VI, VII): the paper's validation loss beside ours, our
next-step and autoregressive losses (from ``benchmarks.evaluation``'s files beside each run), the
no-change reference, the paper's pairwise orderings checked, Figures 6-8 / 16-18 / 19-21 and, for
Ant, Figures 22/23. ``report.kind: ablation`` (Tables VIII-X): the paper's eleven rows beside ours.
What each table is (its paper key, figure numbers, feature indices, ablation rows) is declared in
its ``conf/experiment/<E>.yaml``; outputs go to ``<results>/<E>/<profile>/table.md|.tex`` and
``<plots>/<E>/<profile>/``. Nothing here builds a model.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import pathlib
import shutil
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks import tables
from benchmarks.evaluation import FEATURE_STEPS  # the paper plots the first 50 predictions
from benchmarks.evaluation import SUMMARY_KEYS as EVAL_KEYS  # per-run evaluation arrays (benchmarks.evaluation)
from benchmarks.records import REPO, atomic_write_text
from benchmarks.runs import sweep_records

PAPER_FILE = REPO / "benchmarks" / "paper_tables.yaml"
PAPER_NAMES = {"robotics_stu": "STU", "robotics_stu_t": "STU-T", "robotics_transformer": "Transformer",
               "robotics_mamba2": "Mamba-2"}
ROBOTICS_MODELS = list(PAPER_NAMES)


def paper_tables() -> dict[str, Any]:
    return yaml.safe_load(PAPER_FILE.read_text())


def _label(model: str) -> str:
    return PAPER_NAMES.get(model, model)


# ------------------------------------------------------------------------------------- provenance
def _provenance(records: list[dict], runs_root: pathlib.Path, profile: str) -> list[str]:
    commits = sorted({r.get("git_commit", "unknown") for r in records})
    devs = sorted({(r.get("device") or {}).get("gpu") or (r.get("device") or {}).get("cpu") or "?" for r in records})
    threads = sorted({str((r.get("device") or {}).get("torch_threads")) for r in records
                      if (r.get("device") or {}).get("torch_threads") is not None})
    settings = sorted({json.dumps({k: r["settings"][k] for k in ("steps", "batch_size")}
                                  | {"context": (r.get("task_info") or {}).get("context"),
                                     "optimizer": r["settings"]["optimizer"].get("name"),
                                     "lr": r["settings"]["optimizer"].get("lr")}, sort_keys=True)
                       for r in records if "settings" in r})
    tinfo = (records[0].get("task_info") or {}) if records else {}
    agent = tinfo.get("agent") or {}
    lines = [f"- Profile: **{profile}**; run records under `{runs_root}/{profile}/` "
             f"({len(records)} run(s), listed at the end).",
             f"- Commit(s): {', '.join(c[:12] + ('-dirty' if c.endswith('-dirty') else '') for c in commits)}.",
             f"- Device(s): {', '.join(devs)}" + (f" (torch threads per run: {', '.join(threads)})" if threads else "") + ".",
             f"- Training settings: {'; '.join(settings)}.",
             f"- Data: {tinfo.get('env_id')} `{tinfo.get('profile')}` dataset, {tinfo.get('n_traj')} trajectories x "
             f"{tinfo.get('steps')} steps ({tinfo.get('n_train')} train / {tinfo.get('n_val')} validation), agent "
             f"`{agent.get('source')}` (mean return {_round(agent.get('mean_return'))}), data mean return "
             f"{_round(tinfo.get('data_mean_return'))}."]
    return lines


def _round(x, nd: int = 1):
    return round(float(x), nd) if isinstance(x, (int, float)) else x


def _run_list(records: list[dict]) -> list[str]:
    out = ["", "Runs:", ""]
    for r in records:
        out.append(f"- `{r.get('run_dir', r.get('_dir'))}` ({r.get('status')}, {r.get('steps_done')} steps, "
                   f"{r.get('wall_time_s')} s, commit {str(r.get('git_commit'))[:12]})")
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def paper_unit(record: dict[str, Any]) -> tuple[float, bool]:
    """A run's validation loss in the paper's unit and whether it is exact: ``paper_mse`` (mean squared
    error per feature, the validation split normalised by its own statistics as the authors' loader
    does); records made before that metric existed give ``mse_per_feature`` (per feature, but in the
    training split's normalisation), flagged inexact."""
    fm = record.get("final_metrics") or {}
    if record.get("status") != "ok":
        return math.nan, True
    if "paper_mse" in fm:
        return float(fm["paper_mse"]), True
    return float(fm.get("mse_per_feature", math.nan)), False


def suite_unit(record: dict[str, Any]) -> float:
    """A run's validation loss 1/2 ||x^ - x||^2 per position (the suite's unit, our normalisation)."""
    fm = record.get("final_metrics") or {}
    if record.get("status") != "ok":
        return math.nan
    return float(fm.get("half_sq", fm.get("loss", math.nan)))


EVAL_READING_NOTE = ("The paper says \"losses averaged over 500 predictions\" and plots 50 time steps (Figures 22/23); "
                     "this is the authors' code's reading (`models/*/predict.py`: `steps = 50` from `init = sl` on "
                     "each of up to `num_preds = 500` validation trajectories, `utils/plot_predict_mean.py` averages "
                     "over them), on every validation trajectory we have.")
EVAL_OTHER_NOTE = ("The authors' code predicts 50 steps from t0 = context - 1 on every validation trajectory (the "
                   "paper profile's setting); this table uses other settings (`profile.robotics_eval`).")
INEXACT_NOTE = ("† made before the suite recorded `paper_mse`: mean squared error per feature in the training "
                "split's normalisation, not the validation split's own (the authors'); rerun for the exact unit.")


def _mean_sd(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return _fmt(vals[0])
    return f"{_fmt(float(np.mean(vals)))} ± {_fmt(float(np.std(vals)))} (n={len(vals)})"


def _md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    """Markdown through pandas (:mod:`benchmarks.tables`; text left, numbers right)."""
    return tables.markdown(tables.frame(header, rows)).splitlines()


def _tex_table(caption: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """Booktabs LaTeX through pandas (:mod:`benchmarks.tables`: escaped, compiles with pdflatex)."""
    return tables.latex(tables.frame(header, rows), caption, notes, source="python -m benchmarks.robotics")


def _rel(path: pathlib.Path, start: pathlib.Path) -> str:
    try:
        return os.path.relpath(pathlib.Path(path).resolve(), pathlib.Path(start).resolve())
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_prediction_losses(per_model: dict[str, dict[str, np.ndarray]], kind: str, title: str, path: pathlib.Path) -> None:
    """Figures 7/8 (17/18, 20/21): the loss of each prediction step, mean over runs, in the paper's unit
    (``mse_<kind>``, mean squared error per feature); in the suite's unit (``loss_<kind>``) only for
    evaluations saved before the paper's unit was kept."""
    from benchmarks.report import COLORS, finish_plot

    plt = _plt()
    paper_unit = all(np.isfinite(d[f"mse_{kind}"]).all() for d in per_model.values())
    key = f"mse_{kind}" if paper_unit else f"loss_{kind}"
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    for model, d in per_model.items():
        curve = d[key]  # (runs, P): each run's mean over its trajectories
        mean = curve.mean(0)
        k = np.arange(1, len(mean) + 1)
        # the raw per-step mean faint, a moving average (in log space, a 25th of the steps) on top
        window = max(1, len(mean) // 25)
        smooth = np.exp(pd.Series(np.log(np.maximum(mean, 1e-12))).rolling(window, center=True, min_periods=1).mean())
        ax.plot(k, mean, color=COLORS.get(model), lw=0.6, alpha=0.25)
        ax.plot(k, smooth, color=COLORS.get(model), lw=1.6, label=f"{_label(model)} (mean {mean.mean():.4g})")
    ax.set_yscale("log")
    ax.set_xlabel("prediction step k after t0 (faint: each step; bold: moving average)")
    ax.set_ylabel("MSE per feature (the paper's unit)" if paper_unit else "loss 1/2 ||x^ - x||^2 (normalised states)")
    finish_plot(fig, ax, title, path)


def plot_feature(per_model: dict[str, dict[str, np.ndarray]], index: int, title: str, ylabel: str,
                 path: pathlib.Path, steps: int = FEATURE_STEPS) -> None:
    from benchmarks.report import COLORS

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=150, sharey=True)
    any_d = next(iter(per_model.values()))
    t0 = int(any_d["t0"])
    n = min(steps, any_d["true"].shape[1])
    t = np.arange(t0 + 1, t0 + 1 + n)
    for ax, key, name in ((axes[0], "pred_next", "next-step"), (axes[1], "pred_ar", "autoregressive")):
        ax.plot(t, any_d["true"][:, :n, index].mean(0), color="black", lw=2, label="ground truth")
        for model, d in per_model.items():
            ax.plot(t, d[key][:, :n, index].mean(0), color=COLORS.get(model), lw=1.2, ls="--", label=_label(model))
        ax.set_title(f"{name} prediction", fontsize=9)
        ax.set_xlabel("time step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    handles, labels = axes[1].get_legend_handles_labels()  # one legend, outside both panels
    fig.legend(handles, labels, fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(0.885, 0.5))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------- Tables II, VI, VII
def report_table(cfg, jobs: list[dict[str, Any]]) -> pathlib.Path:
    """The table of a robotics experiment (``report.kind``: ``robotics`` or ``ablation``) from the
    records of exactly ``jobs`` (the sweep's runs) and the evaluations saved beside them."""
    from omegaconf import OmegaConf

    rep = OmegaConf.to_container(cfg.report, resolve=True)
    name, profile = str(cfg.experiment_name), str(cfg.profile.name)
    runs_root = pathlib.Path(cfg.paths.runs)
    records = sweep_records(jobs)
    if not records:
        raise SystemExit(f"no run records of this sweep under {runs_root / profile / name}")
    results = pathlib.Path(cfg.paths.results) / name / profile
    plots = pathlib.Path(cfg.paths.plots) / name / profile
    ev = OmegaConf.to_container(cfg.profile.robotics_eval, resolve=True)
    if rep["kind"] == "robotics":
        return env_table(name, profile, rep, records, runs_root, results, plots, int(ev["predictions"]),
                         ev.get("max_trajectories"))
    return ablation_table(name, profile, rep, records, runs_root, results, plots)


def env_table(exp: str, profile: str, spec: dict[str, Any], records: list[dict], runs_root: pathlib.Path,
              results: pathlib.Path, plots: pathlib.Path, n_pred: int, max_traj: int | None) -> pathlib.Path:
    """Tables II / VI / VII with Figures 6-8 (16-18, 19-21) and 22/23, from records and the saved
    prediction evaluations (:mod:`benchmarks.evaluation`)."""
    from benchmarks.evaluation import baseline_path, load_predictions, predictions_path
    from benchmarks.report import report

    records = [r for r in records if r.get("model") in ROBOTICS_MODELS]
    fps = {r["config_fingerprint"] for r in records}
    rep = report(exp, profile, runs_root, results.parent.parent, plots.parent.parent, fingerprints=fps, rep=spec,
                 quiet=True)  # runs.csv, curves, summary.md, training-curve figure
    out_dir = results
    table, figures = spec["table"], spec["figures"]
    paper = paper_tables()[table["paper"]]
    features = [(f["tag"], int(f["index"]), f["figure"], f["what"], f["ylabel"]) for f in spec.get("features") or []]

    per_model: dict[str, dict[str, np.ndarray]] = {}
    pred_rows, feat_rows = [], []
    ok = [r for r in records if r.get("status") == "ok"]
    # runs whose prediction evaluation has not run yet (reproduce with evaluate=false, or stopped in it)
    pending = [r for r in ok if not predictions_path(r, n_pred, max_traj).exists()]
    kept = set()
    for r in ok:
        if r in pending:
            continue
        d = load_predictions(r, n_pred, max_traj)
        # a copy beside the committed records, so a fresh clone restores the evaluated run (benchmarks.restore)
        src = predictions_path(r, n_pred, max_traj)
        dst = out_dir / "evaluations" / pathlib.Path(r["_dir"]).name / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        kept.add(dst)
        if "mse_next" not in d:  # saved before the evaluation kept the paper's unit (restored, no weights)
            d = {**d, "mse_next": np.full_like(d["loss_next"], np.nan), "mse_ar": np.full_like(d["loss_ar"], np.nan)}
        agg = per_model.setdefault(r["model"], {k: [] for k in EVAL_KEYS})
        for k in EVAL_KEYS:
            agg[k].append(d[k])
        agg["t0"], agg["n_traj"] = d["t0"], int(d["n_traj"])
        for i in range(d["loss_next"].shape[1]):
            pred_rows.append({"model": r["model"], "seed": r["seed"], "k": i + 1, "t": int(d["t0"]) + i + 1,
                              **{k: float(d[k][:, i].mean()) for k in ("mse_next", "mse_ar", "loss_next", "loss_ar")}})
        for tag, idx, _fig, _desc, _y in features:
            for i in range(min(FEATURE_STEPS, d["true"].shape[1])):
                feat_rows.append({"feature": tag, "index": idx, "model": r["model"], "seed": r["seed"],
                                  "t": int(d["t0"]) + i + 1, "true": float(d["true"][:, i, idx].mean()),
                                  "next_step": float(d["pred_next"][:, i, idx].mean()),
                                  "autoregressive": float(d["pred_ar"][:, i, idx].mean())})
    for f in sorted((out_dir / "evaluations").glob("*/*.npz")) if (out_dir / "evaluations").is_dir() else []:
        if f not in kept:  # an evaluation of a run that is not in this sweep (any more)
            f.unlink()
    for model, agg in per_model.items():
        for k in EVAL_KEYS:
            agg[k] = np.concatenate(agg[k])  # one row per run: each run's means over its trajectories
    per_model = {m: per_model[m] for m in ROBOTICS_MODELS if m in per_model}

    import pandas as pd

    if pred_rows:  # no file of headers alone while every evaluation is pending
        atomic_write_text(out_dir / "predictions.csv", pd.DataFrame(pred_rows).to_csv(index=False))
    else:
        (out_dir / "predictions.csv").unlink(missing_ok=True)
    figs: dict[str, pathlib.Path] = {"training": rep["plot"]}
    if per_model:
        n_traj = next(iter(per_model.values()))["n_traj"]
        f7, f8 = figures["next_step"], figures["autoregressive"]
        figs["next"] = plots / "nextstep.png"
        what = f"{n_pred} prediction steps, mean of {n_traj} validation trajectories a run, {profile} profile"
        plot_prediction_losses(per_model, "next", f"Figure {f7}: {table['robot']} next-step prediction loss\n({what})",
                               figs["next"])
        figs["ar"] = plots / "autoregressive.png"
        plot_prediction_losses(per_model, "ar", f"Figure {f8}: {table['robot']} autoregressive next-step prediction "
                               f"loss\n({what})", figs["ar"])
        if feat_rows:
            atomic_write_text(out_dir / "features.csv", pd.DataFrame(feat_rows).to_csv(index=False))
        for tag, idx, fig, desc, ylab in features:
            figs[tag] = plots / f"{tag}.png"
            plot_feature(per_model, idx, f"{fig}: {table['robot']} {desc}, observation index {idx}\ntruth and "
                         f"predictions averaged over {n_traj} validation trajectories, first {FEATURE_STEPS} "
                         f"predictions ({profile} profile)", ylab, figs[tag])

    # ---- reference row: predicting no change (evaluated beside the runs by benchmarks.evaluation)
    base = None
    bpath = baseline_path(runs_root / profile / exp, n_pred, max_traj)
    if ok and bpath.exists():
        with np.load(bpath) as z:
            got = lambda k: float(np.mean(z[k])) if k in z.files else math.nan  # noqa: E731  (older files lack some)
            base = {"val": got("val"), "val_paper": got("val_paper"), "next": got("loss_next"), "ar": got("loss_ar"),
                    "mse_next": got("mse_next"), "mse_ar": got("mse_ar")}

    # ---- the table: the paper's unit first (what is compared with the paper), the suite's beside it
    header = ["Model", "Params (ours)", "Validation MSE per feature (ours, the paper's unit)",
              "Validation loss (paper, reference)", "Ours / paper", "Validation 1/2 ||x^ - x||^2 (ours)",
              f"Next-step MSE per feature, mean of {n_pred} steps (ours, the paper's unit)",
              f"Autoregressive MSE per feature, mean of {n_pred} steps (ours, the paper's unit)",
              f"Next-step 1/2 ||x^ - x||^2, mean of {n_pred} (ours)",
              f"Autoregressive 1/2 ||x^ - x||^2, mean of {n_pred} (ours)"]
    rows, ours, spread, inexact = [], {}, {}, False
    for m in ROBOTICS_MODELS:
        rs = [r for r in records if r["model"] == m]
        if not rs:
            rows.append([_label(m), "no run", "no run", _fmt(paper.get(_label(m))), "n/a", "no run", "n/a", "n/a",
                         "n/a", "n/a"])
            continue
        got = [paper_unit(r) for r in rs if r.get("status") == "ok"]
        vals = [v for v, _ in got]
        flag = "" if all(exact for _, exact in got) else " †"
        inexact |= bool(flag)
        ours[m] = float(np.mean(vals)) if vals else math.nan
        spread[m] = float(np.std(vals)) if len(vals) > 1 else None
        div = sum(r.get("status") != "ok" for r in rs)
        v = _mean_sd(vals) + flag + (f" ({div} diverged)" if div else "")
        pm = per_model.get(m)
        n_eval = sum(1 for r in rs if r.get("status") == "ok" and r not in pending)
        part = "" if n_eval == len(vals) else f" ({n_eval} of {len(vals)} runs evaluated)"
        pv = paper.get(_label(m))
        rows.append([_label(m), f"{rs[0]['params']:,}", v, _fmt(pv),
                     f"{ours[m] / pv:.2f}x" if pv and math.isfinite(ours[m]) else "n/a",
                     _mean_sd([suite_unit(r) for r in rs if r.get("status") == "ok"]),
                     *[_eval_cell(pm, k, part) for k in ("mse_next", "mse_ar", "loss_next", "loss_ar")]])
    if base is not None:
        rows.append(["No-change baseline x̂_(t+1) = x_t (reference, not trained)", "0", _fmt(base["val_paper"]), "-",
                     "-", _fmt(base["val"]), _fmt(base["mse_next"]), _fmt(base["mse_ar"]), _fmt(base["next"]),
                     _fmt(base["ar"])])
    checks = ordering_checks(paper, ours, spread)
    held = sum(1 for c in checks if c[1])
    title = f"Table {table['roman']}: {table['robot']} comparative validation loss"
    regimes = sorted({str(r.get("regime") or (r.get("config") or {}).get("regime", {}).get("name") or "ours")
                      for r in records})
    notes = _provenance(records, runs_root, profile) + [
        f"- Regime: {', '.join(regimes)} (`conf/regime/`). Compared with the paper in the paper's unit only: the mean "
        f"squared error per feature on the validation split normalised by its own statistics, as the authors' code "
        f"computes it (`nn.MSELoss`, `utils/dataloader.py`); mean ± standard deviation over seeds. Paper: the value "
        f"printed in Table {table['roman']} (copied from `benchmarks/paper_tables.yaml`; a reference, not a result of "
        f"this suite). The suite's own unit, 1/2 ||x^_(t+1) - x_(t+1)||^2 per position on our normalisation, is beside it.",
    ] + ([
        f"- Next-step / autoregressive: {n_pred} consecutive predictions per validation trajectory, of x_(t0+1) .. "
        f"x_(t0+{n_pred}) with t0 = {int(next(iter(per_model.values()))['t0']) if per_model else 'n/a'}, each from "
        f"the window of the last {(records[0].get('task_info') or {}).get('context', 'context')} inputs, "
        f"averaged over {next(iter(per_model.values()))['n_traj'] if per_model else 0} validation trajectories per "
        "run, in the paper's unit (MSE per feature on the validation split's own normalisation) and the suite's. "
        + (EVAL_READING_NOTE if (n_pred, max_traj) == (50, None) else EVAL_OTHER_NOTE) + " Autoregressive "
        "rollouts feed back their own state predictions and never see a ground-truth state after t0; actions are "
        "the recorded (ground-truth) actions, as exogenous inputs. The paper gives these only as figures "
        f"({figures['next_step']}, {figures['autoregressive']}), so there is no paper column for them."] if per_model else []) + ([f"- {INEXACT_NOTE}"] if inexact else []) + ([
        f"- Prediction evaluation: {len(ok) - len(pending)} of {len(ok)} runs evaluated so far (the next-step and "
        f"autoregressive columns and Figures {figures['next_step']}/{figures['autoregressive']} use only those). "
        f"`python -m benchmarks.reproduce experiment={exp} profile={profile}` evaluates the others (each "
        f"evaluation is saved beside its run, so a stopped one resumes with the runs still missing): "
        + ", ".join(f"`{_label(r['model'])}` seed {r['seed']}" for r in pending) + "."] if pending else [])
    md = [f"# {title}", ""] + notes + [""] + _md_table(header, rows) + [
        "", f"## The paper's orderings at this size ({held} of {len(checks)} pairwise orderings hold)", "",
        "Beyond the spread: the two means differ by more than the sum of the two seeds' standard deviations "
        "(n/a with one seed per model).", ""]
    md += _md_table(["ordering in the paper", "ours", "holds?", "beyond the seed spread?"],
                    [[f"{a} < {b} ({_fmt(pa)} < {_fmt(pb)})", f"{_fmt(oa)} vs {_fmt(ob)}",
                      "holds" if h else ("no runs" if h is None else "**does not hold**"), beyond]
                     for (a, b, pa, pb, oa, ob), h, beyond in checks], "|---|---|---|---|")
    md += ["", "## Figures", ""]
    fig_names = {"training": f"Figure {figures['training']}: validation loss during training",
                 "next": f"Figure {figures['next_step']}: next-step prediction loss",
                 "ar": f"Figure {figures['autoregressive']}: autoregressive next-step prediction loss",
                 **{tag: f"{fig}: {desc} (index {idx})" for tag, idx, fig, desc, _ in features}}
    for k, p in figs.items():
        md += [f"![{fig_names.get(k, k)}]({_rel(p, results)})", ""]
    md += _run_list(records)
    atomic_write_text(results / "table.md", "\n".join(md) + "\n")
    atomic_write_text(results / "table.tex", _tex_table(f"{title} ({profile} profile)", header, rows,
                                                        notes))
    print("\n".join(md))
    return results / "table.md"


def _eval_cell(pm: dict[str, np.ndarray] | None, key: str, part: str) -> str:
    """A prediction column of Tables II/VI/VII: the mean over steps, runs and trajectories."""
    if not pm:
        return "not evaluated yet"
    v = float(pm[key].mean())
    if not math.isfinite(v):
        return "not recorded (evaluated before the paper's unit was kept; evaluate again)"
    return _fmt(v) + part


def ordering_checks(paper: dict[str, float], ours: dict[str, float], spread: dict[str, float | None] | None = None):
    """Every pair of models the paper orders: ``((a, b, paper_a, paper_b, ours_a, ours_b), holds,
    beyond)``, ``holds`` whether our means order them the same way (None without runs), ``beyond``
    whether our two means differ by more than the sum of their seed standard deviations ("yes" /
    "no", "n/a" with one seed)."""
    out = []
    labs = {_label(m): m for m in ROBOTICS_MODELS}
    spread = spread or {}
    for a, b in itertools.combinations(sorted(paper, key=paper.get), 2):
        ma, mb = labs.get(a), labs.get(b)
        oa, ob = ours.get(ma, math.nan), ours.get(mb, math.nan)
        holds = None if not (math.isfinite(oa) and math.isfinite(ob)) else bool(oa < ob)
        sa, sb = spread.get(ma), spread.get(mb)
        beyond = "n/a" if holds is None or sa is None or sb is None else ("yes" if abs(ob - oa) > sa + sb else "no")
        out.append(((a, b, paper[a], paper[b], oa, ob), holds, beyond))
    return out


# ------------------------------------------------------------------------------ Tables VIII-X
def ablation_table(exp: str, profile: str, spec: dict[str, Any], records: list[dict], runs_root: pathlib.Path,
                   results: pathlib.Path, plots: pathlib.Path) -> pathlib.Path:
    """Tables VIII-X: the paper's eleven rows (``report.rows`` of the experiment) beside ours."""
    from benchmarks.report import report

    fps = {r["config_fingerprint"] for r in records}
    rep = report(exp, profile, runs_root, results.parent.parent, plots.parent.parent, fingerprints=fps, rep=spec,
                 quiet=True)
    table = spec["table"]
    paper = paper_tables()[table["paper"]]
    header = ["Model", "Params (ours)", "Params (paper)", "Width", "Layers", "Noise/Frequency",
              "MSE per feature (ours, the paper's unit)", "MSE loss (paper, reference)", "1/2 ||x^ - x||^2 (ours)"]
    rows = []
    seen = set()
    inexact = False
    for (setting, w, d, ns, nf), prow in zip(spec["rows"], paper):
        rs = [r for r in records if (r.get("config") or {}).get("ablation_name") == setting]
        got = [paper_unit(r) for r in rs if r.get("status") == "ok"]
        flag = "" if all(exact for _, exact in got) else " †"
        inexact |= bool(flag)
        params = f"{int(rs[0]['params']) / 1e6:.3f}M" if rs else "no run"
        val = _mean_sd([v for v, _ in got]) + flag if rs else "no run"
        if rs and setting in seen:
            val += " (same run as above)"
        seen.add(setting)
        rows.append([_label(table["model"]), params, f"{prow[0]:.2f}M", str(w), str(d), f"{ns}/{nf}", val,
                     f"{prow[5]:.4f}", _mean_sd([suite_unit(r) for r in rs if r.get("status") == "ok"]) if rs else "no run"])
    title = f"Table {table['roman']}: ablation studies for {_label(table['model'])} models (Ant-v1)"
    notes = _provenance(records, runs_root, profile) + [
        "- Compared with the paper in its unit: the mean squared error per feature on the validation split normalised "
        "by its own statistics (the authors' `nn.MSELoss` and loader); the suite's 1/2 ||x^ - x||^2 beside it. Noise: "
        "std/frequency of Gaussian noise added to the inputs of a time step; where (training only or validation too) "
        "and in which units (normalised or raw) is the regime's (`conf/regime/`, recorded in each run's task_info).",
        f"- Our models are `conf/model/{table['model']}.yaml` with width/depth changed and the ablation sizes of "
        f"`conf/experiment/{exp}.yaml` (SwiGLU hidden size 128 at every width, no MoE: the sizes that reproduce the "
        "paper's printed parameter counts). Paper columns come from `benchmarks/paper_tables.yaml` (references).",
    ] + ([f"- {INEXACT_NOTE}"] if inexact else [])
    md = [f"# {title}", ""] + notes + [""] + _md_table(header, rows)
    md += ["", f"![training curves]({_rel(rep['plot'], results)})", ""] + _run_list(records)
    atomic_write_text(results / "table.md", "\n".join(md) + "\n")
    atomic_write_text(results / "table.tex", _tex_table(f"{title} ({profile} profile)", header, rows, notes[:3]))
    print("\n".join(md))
    return results / "table.md"


