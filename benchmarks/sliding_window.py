"""Sliding-window attention against full causal attention (issue 13, item 6): does the window pay?

    python -m benchmarks.sliding_window [profile=smoke|paper] [threads=1]
    python -m benchmarks.reproduce experiment=sliding_window profile=smoke      (the same)

``conf/experiment/sliding_window.yaml`` (``kind: sliding_window``) gives the sizes per profile; the
heads, the window (a fraction of L) and the softcap are those of ``conf/mixer/<mixer>.yaml`` (the
Flash STU mixer ``sliding_attention``: 8 heads, window L/8, softcap 50); ``width`` sets the head
dimension. What is timed is the attention core, q, k, v (batch, heads, L, head_dim) -> y, forward
and backward of a fixed random output gradient (the projections and RoPE around it are the same work
on every path and are left out). Variants, at each L:

* ``full_sdpa``: full causal attention, ``scaled_dot_product_attention(is_causal=True)``, no softcap;
* ``window_sdpa``: the sliding window without softcap as ``Attention`` computes it
  (``attention=local``: :func:`models.attention.window_sdpa`);
* ``band_mask_sdpa``: the same window as SDPA with an L x L band mask (the ``blocked=false`` path),
  up to ``band_mask_max_len``;
* ``window_softcap``: the sliding window with the softcap (:func:`models.attention.softcap_attention`,
  the ``attention=local`` path);
* ``full_softcap_blocked``: full causal attention with the softcap by the same block loop (window None);
* ``full_softcap_math``: full causal attention with the softcap by the explicit formula
  (:func:`models.attention.reference_attention`, the ``attention=math`` path; L x L scores), up to
  ``math_max_len``.

Timing: the variants are interleaved (one call of each per round, the order reversed every other
round), ``warmup`` untimed rounds then ``repeats`` timed ones; medians are reported, wall clock
(``time.perf_counter``, after ``cuda.synchronize`` on a GPU) and, on a CPU, the thread's CPU time
(``time.thread_time``), which a shared machine disturbs less. Ratios (< 1: the window pays):

* no softcap: window_sdpa / full_sdpa;
* softcap: window_softcap / the faster exact full-causal softcap (blocked or math);
* reference: window_softcap / full_sdpa (the softcap window against full attention without softcap).

Before timing, at the shortest length (if <= ``math_max_len``) the outputs of the window paths are
compared with the explicit formula (max |difference| in the record). Written:
``<results>/sliding_window/<profile>/`` ``sliding_window.md`` (tables), ``sliding_window.csv`` (one row
per L: every median and ratio), ``record.json`` (settings, device, threads, versions, commit, load
average before and after, every timing) and ``<plots>/sliding_window/<profile>/sliding_window.png``
(the ratios against L).
"""
from __future__ import annotations

import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from benchmarks.config import CONF_DIR, ConfigError, compose, require_int, without_hydra
from benchmarks.loop import resolve_device, resolve_dtype
from benchmarks.records import (atomic_write_csv, atomic_write_json, atomic_write_text, device_info, git_commit,
                                package_versions, save_diff)
from models.attention import Attention, attention_mask, reference_attention, softcap_attention, window_sdpa

VARIANTS = {
    "full_sdpa": "full causal, SDPA is_causal, no softcap",
    "window_sdpa": "window, no softcap (attention=local: window_sdpa)",
    "band_mask_sdpa": "window, no softcap, SDPA with an L x L band mask (blocked=false)",
    "window_softcap": "window + softcap (attention=local: softcap_attention)",
    "full_softcap_blocked": "full causal + softcap, the block loop (softcap_attention, window None)",
    "full_softcap_math": "full causal + softcap, explicit formula (attention=math)",
}
RATIOS = {
    "window_vs_full": ("window_sdpa", "full_sdpa", "no softcap: window / full causal SDPA"),
    "softcap_window_vs_full_softcap": ("window_softcap", "full_softcap_best",
                                       "softcap: window / full causal with softcap (best exact)"),
    "softcap_window_vs_full_sdpa": ("window_softcap", "full_sdpa",
                                    "softcap window / full causal SDPA without softcap (reference)"),
}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check(cfg: DictConfig) -> dict[str, Any]:
    """The settings of this profile, the mixer's heads / window / softcap, checked."""
    spec = OmegaConf.to_container(cfg.sliding_window, resolve=True)
    profile = str(cfg.profile.name)
    sizes = (spec.get("sizes") or {}).get(profile)
    if not sizes:
        raise ConfigError(f"sliding_window.sizes.{profile} is missing; profiles with sizes: "
                          f"{', '.join(spec.get('sizes') or {}) or 'none'}")
    mixer_file = CONF_DIR / "mixer" / f"{spec.get('mixer')}.yaml"
    if not mixer_file.exists():
        raise ConfigError(f"sliding_window.mixer: no conf/mixer/{spec.get('mixer')}.yaml")
    mixer = OmegaConf.to_container(OmegaConf.load(mixer_file), resolve=True)
    frac, cap = mixer.get("window"), mixer.get("softcap")
    if not isinstance(frac, float) or not 0 < frac < 1:
        raise ConfigError(f"conf/mixer/{spec['mixer']}.yaml: window must be a fraction of L in (0, 1), got {frac!r}")
    if not cap:
        raise ConfigError(f"conf/mixer/{spec['mixer']}.yaml has no softcap")
    width, batch = require_int("sliding_window.width", spec.get("width")), require_int("sliding_window.batch", spec.get("batch"))
    att = Attention(width, 8, num_heads=int(mixer.get("num_heads", 8)), position=mixer.get("position", "rope"))  # its head rule
    lengths = sizes.get("lengths") or []
    for i, L in enumerate(lengths):
        require_int(f"sliding_window.sizes.{profile}.lengths[{i}]", L, 2)
    if not lengths:
        raise ConfigError(f"sliding_window.sizes.{profile}.lengths is empty")
    for key in ("warmup", "repeats", "math_max_len", "band_mask_max_len"):
        require_int(f"sliding_window.sizes.{profile}.{key}", sizes.get(key), 0 if key == "warmup" else 1)
    resolve_dtype(str(spec.get("dtype")))
    return {**spec, **sizes, "profile": profile, "heads": att.num_heads, "head_dim": att.head_dim,
            "window_fraction": frac, "softcap": float(cap), "position": mixer.get("position"),
            "lengths": [int(L) for L in lengths]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _variants(q, k, v, L: int, w: int, cap: float, s: dict[str, Any]) -> dict[str, Callable[[], torch.Tensor]]:
    fns: dict[str, Callable[[], torch.Tensor]] = {
        "full_sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "window_sdpa": lambda: window_sdpa(q, k, v, w),
        "window_softcap": lambda: softcap_attention(q, k, v, w, cap),
        "full_softcap_blocked": lambda: softcap_attention(q, k, v, None, cap),
    }
    if L <= s["band_mask_max_len"]:
        band = attention_mask(L, w, q.device)
        fns["band_mask_sdpa"] = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    if L <= s["math_max_len"]:
        fns["full_softcap_math"] = lambda: reference_attention(q, k, v, None, cap)
    return {n: fns[n] for n in VARIANTS if n in fns}


def exactness(L: int, s: dict[str, Any], device, dtype) -> dict[str, float]:
    """max |window path - explicit formula| of the outputs at length L (the timed shapes and dtype)."""
    g = torch.Generator().manual_seed(int(s["seed"]) + 1)
    q, k, v = (torch.randn(s["batch"], s["heads"], L, s["head_dim"], generator=g).to(device, dtype) for _ in range(3))
    w, cap = max(1, int(round(s["window_fraction"] * L))), s["softcap"]
    with torch.no_grad():
        return {
            "window_sdpa": (window_sdpa(q, k, v, w) - reference_attention(q, k, v, w)).abs().max().item(),
            "window_softcap": (softcap_attention(q, k, v, w, cap) - reference_attention(q, k, v, w, cap)).abs().max().item(),
            "full_softcap_blocked": (softcap_attention(q, k, v, None, cap)
                                     - reference_attention(q, k, v, None, cap)).abs().max().item(),
        }


def measure(L: int, s: dict[str, Any], device, dtype) -> dict[str, Any]:
    """Every variant at length L, interleaved; medians (ms) of wall clock and CPU time."""
    g = torch.Generator().manual_seed(int(s["seed"]))
    shape = (s["batch"], s["heads"], L, s["head_dim"])
    q, k, v = (torch.randn(shape, generator=g).to(device, dtype).requires_grad_() for _ in range(3))
    grad = torch.randn(shape, generator=g).to(device, dtype)
    w = max(1, int(round(s["window_fraction"] * L)))  # as Attention turns the fraction into tokens
    fns = _variants(q, k, v, L, w, s["softcap"], s)
    wall: dict[str, list[float]] = {n: [] for n in fns}
    cpu: dict[str, list[float]] = {n: [] for n in fns}
    order = list(fns)
    for rnd in range(s["warmup"] + s["repeats"]):
        for name in (order if rnd % 2 == 0 else order[::-1]):
            for t in (q, k, v):
                t.grad = None
            _sync(device)
            t0, c0 = time.perf_counter(), time.thread_time()
            fns[name]().backward(grad)
            _sync(device)
            t1, c1 = time.perf_counter(), time.thread_time()
            if rnd >= s["warmup"]:
                wall[name].append(1000 * (t1 - t0))
                cpu[name].append(1000 * (c1 - c0))
    row: dict[str, Any] = {"seq_len": L, "window": w}
    for name in VARIANTS:
        row[f"{name}_ms"] = statistics.median(wall[name]) if name in wall else None
        row[f"{name}_cpu_ms"] = statistics.median(cpu[name]) if name in cpu and device.type == "cpu" else None
    for suffix in ("_ms", "_cpu_ms"):
        best = [row[f"full_softcap_{m}{suffix}"] for m in ("blocked", "math") if row[f"full_softcap_{m}{suffix}"] is not None]
        row[f"full_softcap_best{suffix}"] = min(best) if best else None
    row["full_softcap_best_is"] = ("math" if row["full_softcap_math_ms"] is not None
                                   and row["full_softcap_math_ms"] < row["full_softcap_blocked_ms"] else "blocked")
    for key, (num, den, _) in RATIOS.items():
        for suffix, tag in (("_ms", ""), ("_cpu_ms", "_cpu")):
            a, b = row[f"{num}{suffix}"], row[f"{den}{suffix}"]
            row[f"ratio_{key}{tag}"] = a / b if a is not None and b else None
    for cap in (None, s["softcap"]):
        att = Attention(s["width"], L, num_heads=s["heads"], window=s["window_fraction"], softcap=cap)
        row[f"auto_local{'_softcap' if cap else ''}"] = att.uses_blocked(L)
    row["samples_wall_ms"] = wall
    row["samples_cpu_ms"] = cpu if device.type == "cpu" else None
    return row


def _fmt(x, digits: int | None = None) -> str:
    """x with ``digits`` decimals; by default 3 significant digits for times (at least 0 decimals)."""
    if x is None:
        return "-"
    if digits is None:
        digits = 0 if x >= 100 else 1 if x >= 10 else 2
    return f"{x:.{digits}f}"


def _tables(rows: list[dict[str, Any]], cpu: bool) -> list[str]:
    lines = ["| L | window | " + " | ".join(f"{n} (ms)" for n in VARIANTS) + " |", "|" + "---:|" * (2 + len(VARIANTS))]
    for r in rows:
        lines.append(f"| {r['seq_len']} | {r['window']} | " + " | ".join(_fmt(r[f'{n}_ms']) for n in VARIANTS) + " |")
    lines += ["", "Ratios (below 1: the sliding window is faster)" + (", wall clock and, in brackets, CPU time:" if cpu else ":"), ""]
    lines += ["| L | " + " | ".join(label for _, _, label in RATIOS.values()) + " | auto takes the window path (no softcap / softcap) |",
              "|---:|" + "---:|" * len(RATIOS) + "---|"]
    for r in rows:
        cells = []
        for key in RATIOS:
            c = f" ({_fmt(r[f'ratio_{key}_cpu'], 2)})" if cpu else ""
            cells.append(f"{_fmt(r[f'ratio_{key}'], 2)}{c}")
        best = f" [{r['full_softcap_best_is']}]"
        cells[1] += best
        lines.append(f"| {r['seq_len']} | " + " | ".join(cells) +
                     f" | {'yes' if r['auto_local'] else 'no'} / {'yes' if r['auto_local_softcap'] else 'no'} |")
    return lines


def run(cfg: DictConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = check(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(require_int("threads", cfg.threads))
    device, dtype = resolve_device(cfg.device), resolve_dtype(str(s["dtype"]))
    profile, exp = s["profile"], str(cfg.experiment_name)
    out_dir = pathlib.Path(cfg.paths.results) / exp / profile
    plot_dir = pathlib.Path(cfg.paths.plots) / exp / profile
    load_before = os.getloadavg()
    torch.manual_seed(int(s["seed"]))
    check_len = min(s["lengths"])
    exact = exactness(check_len, s, device, dtype) if check_len <= s["math_max_len"] else {}
    if exact:
        _say(f"[sliding_window] L={check_len}: max |path - explicit formula| " +
             ", ".join(f"{k} {v:.1e}" for k, v in exact.items()))
    rows = []
    for L in s["lengths"]:
        r = measure(L, s, device, dtype)
        rows.append(r)
        _say(f"[sliding_window] L={L} w={r['window']}: window/full {r['ratio_window_vs_full']:.2f}, "
             f"softcap window/full softcap {r['ratio_softcap_window_vs_full_softcap']:.2f} "
             f"({r['full_softcap_best_is']}), softcap window/full SDPA {r['ratio_softcap_window_vs_full_sdpa']:.2f}"
             + (f"; CPU time: {r['ratio_window_vs_full_cpu']:.2f}, {r['ratio_softcap_window_vs_full_softcap_cpu']:.2f}, "
                f"{r['ratio_softcap_window_vs_full_sdpa_cpu']:.2f}" if device.type == "cpu" else ""))
    load_after = os.getloadavg()
    info = device_info(device)
    commit = git_commit()
    cpu = device.type == "cpu"
    dname = info.get("gpu") or f"{info.get('cpu')}, {torch.get_num_threads()} torch thread(s)"
    lines = [f"# Sliding-window attention against full causal attention ({profile} profile)", "",
             f"Measured by `python -m benchmarks.sliding_window profile={profile}` on **{dname}** (`{device}`, "
             f"{s['dtype']}), torch {torch.__version__}, commit {commit}, {time.strftime('%Y-%m-%d %H:%M %Z')}. "
             f"Load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores"
             + (" (a shared machine: the CPU-time ratios are the steadier ones)" if cpu and max(load_before[0], load_after[0]) > 1.5 else "")
             + ".", "",
             f"Attention core (q, k, v -> y), forward + backward, batch {s['batch']}, {s['heads']} heads of "
             f"{s['head_dim']} (width {s['width']}), window {s['window_fraction']} L and softcap {s['softcap']:g} "
             f"(`conf/mixer/{s['mixer']}.yaml`); medians of {s['repeats']} interleaved calls after {s['warmup']} "
             f"warm-up round(s). `-`: not run at that length (L x L memory).", ""]
    lines += [f"- `{n}`: {d}" for n, d in VARIANTS.items()]
    lines += [""] + _tables(rows, cpu)
    if exact:
        lines += ["", f"Exactness at L = {check_len} ({s['dtype']}): max |output - explicit formula| = " +
                  ", ".join(f"{k} {v:.1e}" for k, v in exact.items()) + " (gradients: tests/test_attention.py)."]
    lines += ["", f"![ratios]({pathlib.Path('..') / '..' / '..' / 'plots' / exp / profile / 'sliding_window.png'})", ""]
    csv_rows = [{k: v for k, v in r.items() if not k.startswith("samples_")} | {
        "batch": s["batch"], "heads": s["heads"], "head_dim": s["head_dim"], "softcap": s["softcap"],
        "dtype": s["dtype"], "device": str(device), "threads": torch.get_num_threads(), "profile": profile}
        for r in rows]
    _plot(plot_dir / "sliding_window.png", rows, cpu,
          f"Sliding window (L/{round(1 / s['window_fraction'])}) vs full causal attention, fwd+bwd ({profile}; {dname[:48]})")
    atomic_write_text(out_dir / "sliding_window.md", "\n".join(lines))
    atomic_write_csv(out_dir / "sliding_window.csv", csv_rows)
    record = {"experiment": exp, "kind": "sliding_window", "profile": profile,
              "config": OmegaConf.to_container(cfg, resolve=True), "settings": s, "git_commit": commit,
              "versions": package_versions(), "device": info, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "load_average_before": list(load_before),
              "load_average_after": list(load_after), "exactness_max_abs_diff": exact, "rows": rows,
              "wall_time_s": round(time.perf_counter() - t_start, 2)}
    record["git_diff"] = save_diff(out_dir, commit)
    atomic_write_json(out_dir / "record.json", record)
    _say("\n".join(_tables(rows, cpu)))
    _say(f"wrote {out_dir} and {plot_dir} in {record['wall_time_s']:.0f} s")
    return record


def _plot(path: pathlib.Path, rows: list[dict[str, Any]], cpu: bool, title: str) -> None:
    from benchmarks.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    Ls = [r["seq_len"] for r in rows]
    styles = {"window_vs_full": ("tab:blue", "-"), "softcap_window_vs_full_softcap": ("tab:red", "-"),
              "softcap_window_vs_full_sdpa": ("tab:red", ":")}
    for key, (_, _, label) in RATIOS.items():
        color, ls = styles[key]
        ax.plot(Ls, [r[f"ratio_{key}"] for r in rows], color=color, ls=ls, marker="o", label=f"{label} (wall)")
        if cpu:
            ax.plot(Ls, [r[f"ratio_{key}_cpu"] for r in rows], color=color, ls=ls, marker="x", alpha=0.5,
                    label=f"{label} (CPU time)")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ls, [str(L) for L in Ls])
    top = max([1.0] + [r[f"ratio_{key}{tag}"] or 0.0 for r in rows for key in RATIOS for tag in ("", "_cpu")])
    ax.set_ylim(0, 1.1 * top)
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("time ratio (below 1: the window pays)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    save_figure(fig, path, title, dpi=120)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.sliding_window [overrides]``: the experiment composed with Hydra
    overrides of ``conf/train.yaml`` (``profile=``, ``threads=``, ``device=``, ``sliding_window.*``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = without_hydra(compose(["experiment=sliding_window", *argv], return_hydra_config=True))
        run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
