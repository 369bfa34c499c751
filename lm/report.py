"""The language-model report (section IV: Tables IV and V, Figures 10 and 11), from run records only.

    python -m lm.report [profile=smoke|paper] ['models=[...]'] [paths.runs=...]   # the newest run of each model
    (python -m lm.reproduce writes it for exactly the runs it trained)

Reads each run's ``record.json`` and ``curve.csv`` (``lm.train``) and ``sample.json`` (``lm.reproduce``'s
sample stage) -- it never builds a model -- and ``<results>/lm/<profile>/reproduce.json`` (the wall
time of ``lm.reproduce``), and writes

* ``<results>/lm/<profile>/table.md`` and ``table.tex``: Table IV-style, one row per run: parameters,
  tokens seen, final validation loss and perplexity, tokens/s and seconds a step on this machine,
  wall time; the paper's values (Table IV for the ~550M models, Table V for the 2B pair) beside
  them as labelled references; the paper's ordering (Flash STU < Mamba-2 hybrid < Mamba-2 <
  Transformer in validation loss) checked on ours; provenance (data, commit, device) and the
  reproduction's wall time;
* ``records.jsonl`` (every run's full record), ``curves.csv`` (every curve, tidy, with the
  cumulative training seconds), ``samples.md`` (each model's top-k sample beside the paper's);
* ``<plots>/lm/<profile>/fig10_training_loss.png`` (training loss against tokens, Figure 10's
  "training curves") and ``fig11_validation_loss.png`` (validation loss against tokens: Flash STU
  and Transformer, the pair of Figure 11, and all models), one fixed colour per model family
  (``benchmarks.report.COLORS``). The captions of Figures 10 and 11 name training curves and the
  validation set; they show no wall-clock axis, so neither do these (the table has the times).

Model names: ``lm_<family>[_tiny|_2b]``; the family (flash_stu, mamba2_hybrid, mamba2,
transformer) picks the paper's row, the label and the colour.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import sys
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks import tables
from benchmarks.records import REPO, atomic_write_text
from benchmarks.report import COLORS, LABELS, pyplot, save_figure

PAPER_FILE = REPO / "benchmarks" / "paper_tables.yaml"
FAMILIES = ["flash_stu", "mamba2_hybrid", "mamba2", "transformer"]  # the paper's Table IV order (best first)
PAPER_NAMES = {"flash_stu": "Flash STU", "mamba2_hybrid": "Mamba-2 Hybrid", "mamba2": "Mamba-2",
               "transformer": "Transformer"}
PAPER_PARAMS_500M = {"flash_stu": "550M", "mamba2_hybrid": "546M", "mamba2": "561M", "transformer": "564M"}  # Table XII
PAPER_PARAMS_2B = {"flash_stu": "2,672M", "transformer": "2,667M"}  # Table XI
PAPER_SAMPLE_PROMPT = ("In a shocking finding, scientist discovered a herd of unicorns living in a remote, previously "
                       "unexplored valley, in the Andes Mountains. Even more surprising to the researchers was the "
                       "fact that the unicorns spoke perfect English.")
PAPER_SAMPLE_OPENING = ("Researchers now believe that these animals could now be a kind of hominid species. This "
                        "discovery was recently made by scientists from the University of London. ...")


def paper_tables() -> dict[str, Any]:
    return yaml.safe_load(PAPER_FILE.read_text())


def family(model: str) -> str:
    """``lm_flash_stu_tiny`` -> ``flash_stu``; a model outside the four families keeps its name."""
    name = model[3:] if model.startswith("lm_") else model
    for suffix in ("_tiny", "_2b"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def scale(model: str) -> str:
    if model.endswith("_2b"):
        return "2b"
    if model.endswith("_tiny"):
        return "tiny"
    return "500m" if model.startswith("lm_") else "other"


def label(model: str) -> str:
    base = PAPER_NAMES.get(family(model), LABELS.get(family(model), model))
    s = scale(model)
    return base + {"tiny": " (tiny)", "2b": " 2B", "500m": " 550M", "other": f" ({model})"}[s]


def color(model: str) -> str | None:
    return COLORS.get(family(model))


def paper_reference(model: str, paper: dict) -> dict:
    """The paper's row for ``model``: table, name, validation loss, perplexity, s/step (or {})."""
    fam = family(model)
    if fam not in PAPER_NAMES:
        return {}
    if scale(model) == "2b":
        row = (paper.get("table5_lm_2b") or {}).get(PAPER_NAMES[fam])
        if not row:
            return {}
        return {"table": "V", "name": f"{PAPER_NAMES[fam]} {PAPER_PARAMS_2B.get(fam, '2B')}",
                "val_loss": row.get("val_loss"), "perplexity": row.get("perplexity"),
                "s_per_step": row.get("s_per_step")}
    v = (paper.get("table4_lm_500m_val_loss") or {}).get(PAPER_NAMES[fam])
    if v is None:
        return {}
    return {"table": "IV", "name": f"{PAPER_NAMES[fam]} {PAPER_PARAMS_500M[fam]}", "val_loss": v,
            "perplexity": None, "s_per_step": None}


# ------------------------------------------------------------------------------------------ reading
def read_run(run_dir) -> dict:
    """A run's record, curve (DataFrame) and sample (or None)."""
    d = pathlib.Path(run_dir)
    rec = json.loads((d / "record.json").read_text())
    cpath = d / "curve.csv"
    curve = pd.read_csv(cpath) if cpath.is_file() and cpath.stat().st_size else pd.DataFrame()
    spath = d / "sample.json"
    sample = json.loads(spath.read_text()) if spath.is_file() else None
    return {"dir": d, "record": rec, "curve": curve, "sample": sample, "model": rec["model"]["name"]}


def find_runs(runs_root, profile: str, models: list[str] | None = None) -> list[pathlib.Path]:
    """The newest complete run (else the newest) of each model under ``<runs>/lm/<profile>/``."""
    root = pathlib.Path(runs_root) / "lm" / profile
    out = []
    if models:
        names = list(models)
    else:
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for m in names:
        cands = []
        for rec in sorted((root / m).glob("*/record.json")):
            try:
                r = json.loads(rec.read_text())
            except json.JSONDecodeError:
                continue
            cands.append((r.get("status") == "complete", r.get("updated", ""), rec.parent))
        if cands:
            out.append(max(cands)[2])
    return out


def _order(runs: list[dict]) -> list[dict]:
    def key(r):
        f = family(r["model"])
        return ({"tiny": 0, "500m": 1, "2b": 2}.get(scale(r["model"]), 3),
                FAMILIES.index(f) if f in FAMILIES else 99, r["model"])
    return sorted(runs, key=key)


# ------------------------------------------------------------------------------------------ numbers
def run_numbers(run: dict) -> dict:
    """The table's numbers of one run, straight from its record."""
    r = run["record"]
    fin = r.get("final") or {}
    steps_done = int(r.get("step") or 0)
    secs = r.get("train_seconds")
    return {"model": run["model"], "label": label(run["model"]), "status": r.get("status"),
            "params": int(r["model"]["params"]), "params_non_embedding": int(r["model"]["params_non_embedding"]),
            "tokens": int(steps_done * r["batch"]["global_batch_tokens"]), "steps": steps_done,
            "steps_planned": int(r.get("steps") or 0),
            "val_loss": fin.get("val_loss"), "val_ppl": fin.get("val_ppl"), "val_step": fin.get("val_step"),
            "train_loss": fin.get("train_loss"), "tokens_per_s": r.get("tokens_per_s"),
            "s_per_step": (secs / steps_done) if secs and steps_done else None,
            "wall_seconds": r.get("wall_seconds"), "world_size": r.get("world_size"),
            "run_dir": str(run["dir"])}


def _f(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _n(x) -> str:
    return "n/a" if x is None else f"{int(x):,}"


def _tok(x: int) -> str:
    return f"{x / 1e6:.2f}M" if x < 1e9 else f"{x / 1e9:.2f}B"


def orderings(nums: list[dict]) -> list[dict]:
    """The paper's orderings (Table IV; Table V) checked on ours: one dict per check."""
    out = []
    for sc, table, fams in (("tiny", "IV", FAMILIES), ("500m", "IV", FAMILIES), ("2b", "V", ["flash_stu", "transformer"])):
        by = {family(n["model"]): n for n in nums if scale(n["model"]) == sc and n["val_loss"] is not None}
        have = [f for f in fams if f in by]
        if len(have) < 2:
            continue
        for a, b in zip(have, have[1:]):
            la, lb = by[a]["val_loss"], by[b]["val_loss"]
            out.append({"scale": sc, "table": table, "claim": f"{PAPER_NAMES[a]} below {PAPER_NAMES[b]}",
                        "ours": f"{la:.4f} vs {lb:.4f}", "holds": bool(la < lb)})
        ranked = sorted(have, key=lambda f: by[f]["val_loss"])
        out.append({"scale": sc, "table": table,
                    "claim": "the whole order " + " < ".join(PAPER_NAMES[f] for f in have),
                    "ours": " < ".join(PAPER_NAMES[f] for f in ranked), "holds": ranked == have})
    return out


# ------------------------------------------------------------------------------------------- curves
def tidy_curves(runs: list[dict]) -> pd.DataFrame:
    frames = []
    for run in runs:
        c = run["curve"].copy()
        if c.empty:
            continue
        c = c.sort_values("step")
        c["train_seconds"] = c["step_s"].fillna(0).cumsum().round(3) if "step_s" in c else np.nan
        c.insert(0, "run", run["dir"].name)
        c.insert(0, "family", family(run["model"]))
        c.insert(0, "model", run["model"])
        frames.append(c)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _ema(y: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(y, dtype=float)
    acc = y[0]
    for i, v in enumerate(y):
        acc = alpha * v + (1 - alpha) * acc if i else v
        out[i] = acc
    return out


def _legend_outside(ax) -> None:
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _tokens_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    def fmt(x, _pos):
        if x == 0:
            return "0"
        return f"{x / 1e9:g}B" if abs(x) >= 1e9 else f"{x / 1e6:g}M" if abs(x) >= 1e6 else f"{x / 1e3:g}k"
    ax.xaxis.set_major_formatter(FuncFormatter(fmt))


def _step_axis(ax, batch_tokens: int | None) -> None:
    _tokens_axis(ax)
    if batch_tokens:
        sec = ax.secondary_xaxis("top", functions=(lambda t: t / batch_tokens, lambda s: s * batch_tokens))
        sec.set_xlabel("step", fontsize=8)
        sec.tick_params(labelsize=7)


def plot_training(curves: pd.DataFrame, runs: list[dict], path: pathlib.Path, title: str,
                  batch_tokens: int | None) -> None:
    """Figure 10-style: training loss against tokens (EMA over ~5% of the steps; the raw losses faint)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.2), dpi=150)
    for run in runs:
        c = curves[(curves["model"] == run["model"]) & (curves["run"] == run["dir"].name)].dropna(subset=["loss"])
        if c.empty:
            continue
        x, y = c["tokens"].to_numpy(float), c["loss"].to_numpy(float)
        col = color(run["model"])
        ax.plot(x, y, color=col, lw=0.6, alpha=0.25)
        ax.plot(x, _ema(y, min(1.0, 20.0 / max(len(y), 1))), color=col, lw=1.6, label=label(run["model"]))
    ax.set_xlabel("training tokens")
    ax.set_ylabel("training loss (nats/token)")
    _step_axis(ax, batch_tokens)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    save_figure(fig, path, title)


def plot_validation(curves: pd.DataFrame, runs: list[dict], path: pathlib.Path, title: str,
                    batch_tokens: int | None) -> None:
    """Figure 11-style: validation loss against tokens: Flash STU vs Transformer (the paper's pair),
    and every model over the second half of training."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.2), dpi=150)
    pair = [r for r in runs if family(r["model"]) in ("flash_stu", "transformer")]
    for ax, subset, sub in ((axes[0], pair or runs, "Flash STU and Transformer (the paper's Figure 11 pair)"),
                            (axes[1], runs, "all models, second half of training")):
        lo_hi = []
        for run in subset:
            c = curves[(curves["model"] == run["model"]) & (curves["run"] == run["dir"].name)].dropna(subset=["val_loss"])
            if c.empty:
                continue
            if ax is axes[1]:
                c = c[c["tokens"] >= 0.5 * c["tokens"].max()]
            ax.plot(c["tokens"], c["val_loss"], color=color(run["model"]), lw=1.6, marker="o", ms=2.5,
                    label=label(run["model"]))
            lo_hi += list(c["val_loss"])
        ax.set_title(sub, fontsize=8)
        ax.set_xlabel("training tokens")
        ax.set_ylabel("validation loss (nats/token)")
        _step_axis(ax, batch_tokens)
        ax.grid(alpha=0.3)
    _legend_outside(axes[1])
    save_figure(fig, path, title)


# ------------------------------------------------------------------------------------------- writing
def _data_line(rec: dict) -> str:
    d = (rec.get("data") or {}).get("train") or {}
    corpus = d.get("corpus") or {}
    remap = d.get("remap") or {}
    tok = d.get("tokenizer") or {}
    parts = [f"corpus `{corpus.get('name')}` {corpus.get('version', '')}".rstrip(),
             f"tokenizer {tok.get('name', 'o200k_base')}"]
    if remap:
        parts.append(f"ids remapped to a {remap.get('vocab_size', '?'):,}-id vocabulary (the o200k_base ids of the "
                     f"training shards, end-of-text and `<unk>`; `lm/remap.py`, vocab sha256 "
                     f"{str(remap.get('vocab_sha256', ''))[:12]})")
    parts.append(f"manifest sha256 {str(d.get('manifest_sha256', ''))[:12]}")
    return ", ".join(parts)


def _reproduce_lines(results_dir: pathlib.Path) -> list[str]:
    path = results_dir / "reproduce.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    invs = doc.get("invocations") or []
    if not invs:
        return []
    lines = [WALL_HEADING, "",
             "Measured on a shared machine: other jobs ran beside it (the load averages are the machine's "
             "1/5/15-minute ones at the start and the end), so an idle machine is faster.", "",
             "| started | command | runs trained / skipped | data | training | samples | until the report | "
             "total | load average (start → end) |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for inv in invs:
        st = inv.get("stage_seconds") or {}
        runs = inv.get("runs") or []
        trained = sum(1 for r in runs if r.get("state_before") != "complete")
        total = inv.get("wall_seconds")

        def sec(x):
            return "—" if x is None else f"{x:,.0f} s"
        lines.append(f"| {inv.get('started')} | `{inv.get('command')}` | {trained} / {len(runs) - trained} | "
                     f"{sec(st.get('data'))} | {sec(st.get('train'))} | {sec(st.get('sample'))} | "
                     f"{sec(inv.get('wall_seconds_before_report'))} | "
                     f"{sec(total) if total is not None else '(running)'} | "
                     f"{inv.get('load_average_start')} → {inv.get('load_average_end') or '…'} |")
    lines += ["", "'Until the report': the wall time when the report started; total: to the end of the invocation "
              "(the report included; `lm.reproduce` rewrites this section when it ends). From `reproduce.json`."]
    return lines


WALL_HEADING = "## Wall time of the reproduction"


def update_wall_time(results_dir) -> bool:
    """Rewrite the wall-time section of ``table.md`` from ``reproduce.json`` (``lm.reproduce`` calls
    it when the invocation ends, so the committed table has the invocation's total)."""
    path = pathlib.Path(results_dir) / "table.md"
    if not path.is_file():
        return False
    text = path.read_text()
    lines = _reproduce_lines(pathlib.Path(results_dir))
    if WALL_HEADING not in text or not lines:
        return False
    head, rest = text.split(WALL_HEADING, 1)
    tail = rest[rest.index("\n## "):] if "\n## " in rest else "\n"
    atomic_write_text(path, head + "\n".join(lines) + "\n" + tail)
    return True


def write_table(nums: list[dict], runs: list[dict], checks: list[dict], paper: dict, profile: str,
                out_dir: pathlib.Path, plots_rel: dict[str, str]) -> tuple[str, str]:
    header = ["model", "params", "non-embedding", "tokens seen", "val loss", "val perplexity",
              "tokens/s (this machine)", "s/step", "wall time", "paper model", "paper val loss", "paper perplexity",
              "paper s/step"]
    rows = []
    for n in nums:
        ref = paper_reference(n["model"], paper)
        status = "" if n["status"] == "complete" else f" ({n['status']}, step {n['steps']}/{n['steps_planned']})"
        rows.append([n["label"] + status, _n(n["params"]), _n(n["params_non_embedding"]), _tok(n["tokens"]),
                     _f(n["val_loss"]), _f(n["val_ppl"], 2),
                     "n/a" if n["tokens_per_s"] is None else f"{n['tokens_per_s']:,.0f}",
                     _f(n["s_per_step"], 2), "n/a" if n["wall_seconds"] is None else f"{n['wall_seconds']:,.0f} s",
                     (f"{ref['name']} (Table {ref['table']})" if ref else "—"),
                     _f(ref.get("val_loss"), 2) if ref else "n/a",
                     _f(ref.get("perplexity"), 2) if ref else "n/a",
                     (f"{ref['s_per_step']:.1f} (approx.)" if ref and ref.get("s_per_step") else "n/a")])
    df = tables.frame(header, rows)
    rec0 = runs[0]["record"]
    b = rec0["batch"]
    dev = rec0.get("device") or {}
    device = dev.get("gpu") or dev.get("cpu") or dev.get("device")
    small = any(scale(n["model"]) == "tiny" for n in nums)
    ws = sorted({n["world_size"] for n in nums})
    evals = sorted({(r["record"].get("identity") or {}).get("eval_sequences") for r in runs} - {None})
    notes = [
        "The paper's columns are references transcribed from the paper (Table IV: the models of about 550M parameters, validation "
        "loss only; Table V: the 2B pair, with perplexity and the mean time per step), never results of this "
        "suite. The paper trained on 10B FineWeb-Edu tokens of 8,192-token sequences with the full 200,064-row "
        "o200k_base vocabulary on 8 H100 GPUs.",
    ]
    if small:
        shapes = sorted({(r["record"]["model"]["fields"].get("width"), r["record"]["model"]["fields"].get("depth"))
                         for r in runs})
        shape = "; ".join(f"width {w}, {d} layers" for w, d in shapes)
        notes.append(
            f"Ours are tiny CPU models ({shape}, {min(n['params'] for n in nums) / 1e6:.1f}-"
            f"{max(n['params'] for n in nums) / 1e6:.1f}M parameters, most of them the tied embedding) trained on "
            f"{_tok(max(n['tokens'] for n in nums))} tokens of Shakespeare with a remapped vocabulary: their "
            "absolute losses and perplexities are not comparable with the paper's; only the ordering of the "
            "models is checked, with one seed per model (the spread between seeds is not measured).")
    notes.append(
        f"Validation loss: mean next-token cross-entropy (nats) over the first {', '.join(map(str, evals))} windows "
        f"of {b['seq_len']} tokens of the validation split, after the last step; perplexity = exp(loss). "
        f"Tokens/s and s/step: training steps only (evaluations and checkpoints excluded), {', '.join(map(str, ws))} "
        f"process(es) on {device}, measured on a shared machine; wall time: each run's own, start-up excluded.")
    md = [f"# Language models, {profile} profile: Table IV/V-style validation loss and perplexity", ""]
    md += [f"- Data: {_data_line(rec0)}.",
           f"- Training: {b['seq_len']}-token windows, {b['global_batch_tokens']:,} tokens a step "
           f"({b['global_sequences']} sequences), {rec0.get('steps')} steps, AdamW lr {rec0['optimizer']['lr']:g} → "
           f"{rec0['optimizer']['min_lr']:g} (linear warm-up over {rec0['optimizer'].get('warmup_steps')} steps, "
           f"linear decay), clip {rec0['optimizer'].get('grad_clip')}, seed {rec0.get('seed')}.",
           f"- Device: {device} ({dev.get('backend')}, {dev.get('precision')}), "
           f"{', '.join(map(str, ws))} process(es) x {dev.get('torch_threads', '?')} thread(s); commit(s) "
           + ", ".join(sorted({str(r['record'].get('git_commit'))[:12] + (' (with uncommitted changes: diffs/)' if str(r['record'].get('git_commit')).endswith('-dirty') else '')
                               for r in runs})) + ".", ""]
    md += [tables.markdown(df), ""] + [f"- {x}" for x in notes] + [""]
    if checks:
        t4 = paper.get("table4_lm_500m_val_loss") or {}
        t5 = paper.get("table5_lm_2b") or {}
        md += ["## The paper's ordering, checked on ours", "",
               "Table IV: " + " < ".join(f"{PAPER_NAMES[f]} {t4[PAPER_NAMES[f]]:.2f}" for f in FAMILIES
                                         if PAPER_NAMES[f] in t4)
               + " (validation loss, lower is better); Table V: "
               + " < ".join(f"{k} 2B {v['val_loss']:.2f}" for k, v in t5.items()) + ".", "",
               "| scale | paper's claim (Table) | ours | at this size |", "|---|---|---|---|"]
        for c in checks:
            md.append(f"| {c['scale']} | {c['claim']} ({c['table']}) | {c['ours']} | "
                      f"{'holds' if c['holds'] else '**does not hold**'} |")
        md += ["", "A check that does not hold means this run does not reproduce that part of the paper's ordering "
               "at this size; tiny models, few tokens and one seed can order differently from the paper's runs.", ""]
    md += ["## Figures", ""] + [f"![{k}]({v})" for k, v in plots_rel.items()] + [""]
    md += ["Figure 10 of the paper: training curves of Flash STU and the baselines; Figure 11: Flash STU and the "
           "Transformer on the validation set. Ours: the same quantities from this suite's runs, against training "
           "tokens (steps on the top axis).", "",
           "Samples (top-k 50, temperature 1, the paper's appendix settings): [samples.md](samples.md). "
           "Every run's record: [records.jsonl](records.jsonl); the curves: [curves.csv](curves.csv).", ""]
    md += _reproduce_lines(out_dir)
    md += ["", "## Runs", ""]
    for n, r in zip(nums, runs):
        md.append(f"- {n['label']}: `{_rel(r['dir'])}` ({n['status']}, {n['steps']} steps, fingerprint "
                  f"{r['record'].get('fingerprint')})")
    md_text = "\n".join(md).rstrip() + "\n"
    tex = tables.latex(df, f"Language models ({profile} profile): validation loss and perplexity, beside the paper's "
                           "Tables IV and V (references).", notes, source="lm.report")
    return md_text, tex


def _rel(p: pathlib.Path) -> str:
    try:
        return str(pathlib.Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _one_line(cmd) -> str:
    """A command for a Markdown code span: the repository's path made relative, newlines as \\n."""
    cmd = str(cmd or "").replace(str(REPO) + "/", "")
    if "\n" in cmd:  # bash's $'...' reads \n as a newline
        cmd = cmd.replace("--prompt '", "--prompt $'")
    return cmd.replace("\n", "\\n")


def write_samples(runs: list[dict], profile: str) -> str:
    lines = [f"# Samples, {profile} profile", "",
             "One continuation per model of the prompt below, by `lm.sample` from the run's final checkpoint "
             "(temperature and top-k as listed; the paper's appendix used temperature 1.0 and top-k 50 on the "
             "Flash STU 2B model)."]
    if any(scale(r["model"]) == "tiny" for r in runs):
        toks = max(int(r["record"].get("step") or 0) * r["record"]["batch"]["global_batch_tokens"] for r in runs)
        lines[-1] += (f" These are tiny models trained on {_tok(toks)} tokens of Shakespeare: expect "
                      "Shakespeare-like word salad, not the paper's fluent text.")
    prompts = {(r["sample"].get("settings") or {}).get("prompt") for r in runs if r["sample"]}
    if len(prompts) == 1:
        lines += ["", "Prompt: `" + repr(prompts.pop())[1:-1] + "`"]
    lines.append("")
    for run in runs:
        s = run["sample"]
        lines += [f"## {label(run['model'])}", ""]
        if not s:
            lines += ["No sample (the run is not complete, or the sample stage did not run).", ""]
            continue
        st = s.get("settings") or {}
        lines += [f"Step {s.get('step')}, {st.get('tokens')} new tokens, temperature {st.get('temperature')}, "
                  f"top-k {st.get('top_k')}, seed {st.get('seed')} ({s.get('device')}, {s.get('seconds')} s). "
                  f"`{_one_line(s.get('command'))}`", "", "```text", s.get("text", "").replace("```", "'''"), "```", ""]
    lines += ["## The paper's sample (Flash STU 2B, appendix; a reference, not ours)", "",
              f"Prompt: *{PAPER_SAMPLE_PROMPT}*", "", f"Output (opening): *{PAPER_SAMPLE_OPENING}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def report(run_dirs, profile: str, results_root, plots_root, log=print) -> dict[str, Any]:
    """Write the report of ``run_dirs`` (see the module docstring); returns the paths written and the
    numbers (``nums``) and checks."""
    runs = _order([read_run(d) for d in run_dirs])
    if not runs:
        raise ValueError("no runs to report")
    out_dir = pathlib.Path(results_root) / "lm" / profile
    plot_dir = pathlib.Path(plots_root) / "lm" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    paper = paper_tables()
    nums = [run_numbers(r) for r in runs]
    checks = orderings(nums)
    curves = tidy_curves(runs)
    batches = {r["record"]["batch"]["global_batch_tokens"] for r in runs}
    batch = batches.pop() if len(batches) == 1 else None
    what = "tiny models, Shakespeare" if any(scale(r["model"]) == "tiny" for r in runs) else "FineWeb-Edu"
    fig10 = plot_dir / "fig10_training_loss.png"
    fig11 = plot_dir / "fig11_validation_loss.png"
    if not curves.empty:
        plot_training(curves, runs, fig10, f"Figure 10-style: training loss ({profile} profile: {what})", batch)
        plot_validation(curves, runs, fig11, f"Figure 11-style: validation loss ({profile} profile: {what})", batch)
    rel = {}
    for name, p in (("Figure 10-style: training loss", fig10), ("Figure 11-style: validation loss", fig11)):
        if p.exists():
            rel[name] = os.path.relpath(p.resolve(), out_dir.resolve())
    md, tex = write_table(nums, runs, checks, paper, profile, out_dir, rel)
    paths = {"table_md": out_dir / "table.md", "table_tex": out_dir / "table.tex",
             "records": out_dir / "records.jsonl", "curves": out_dir / "curves.csv",
             "samples": out_dir / "samples.md", "fig10": fig10, "fig11": fig11}
    atomic_write_text(paths["table_md"], md)
    atomic_write_text(paths["table_tex"], tex)
    atomic_write_text(paths["records"], "".join(json.dumps(dict(r["record"], run_dir=_rel(r["dir"])), sort_keys=True,
                                                           default=str) + "\n" for r in runs))
    atomic_write_text(paths["curves"], curves.to_csv(index=False))
    atomic_write_text(paths["samples"], write_samples(runs, profile))
    for r in runs:  # runs made from a dirty tree: their diffs travel with the results
        diff = r["dir"] / str(r["record"].get("git_diff") or "")
        if r["record"].get("git_diff") and diff.is_file():
            atomic_write_text(out_dir / "diffs" / f"{r['model']}-{r['dir'].name}.diff", diff.read_text())
    for n in nums:
        log(f"report: {n['label']}: validation loss {_f(n['val_loss'])}, perplexity {_f(n['val_ppl'], 2)}, "
            f"{_n(n['params'])} parameters, {_tok(n['tokens'])} tokens")
    for c in checks:
        log(f"report: {c['claim']} ({c['scale']}): {'holds' if c['holds'] else 'does not hold'} ({c['ours']})")
    log(f"report -> {_rel(out_dir)}/ (table.md, table.tex, records.jsonl, curves.csv, samples.md), {_rel(plot_dir)}/")
    return dict(paths, nums=nums, checks=checks)


def main(argv: list[str] | None = None) -> int:
    """``python -m lm.report [profile=...] ['models=[...]'] [paths...]``: the newest run of each model."""
    from lm.reproduce import ReproduceError, _compose_checked, split_argv

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = _compose_checked("lm_reproduce", split_argv(argv)[0], "lm.report overrides")
    except ReproduceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    profile = str(cfg.profile.name)
    dirs = find_runs(cfg.paths.runs, profile, list(cfg.models))
    if not dirs:
        print(f"error: no run records under {cfg.paths.runs}/lm/{profile}/ for {list(cfg.models)}; "
              f"run python -m lm.reproduce profile={profile} first", file=sys.stderr)
        return 1
    report(dirs, profile, cfg.paths.results, cfg.paths.plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
