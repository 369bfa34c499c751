"""Speed and scale (issue 6): train-step time of every registered model, and mixer time against
sequence length.

    python -m benchmarks.reproduce experiment=speed profile=smoke   # 2-core CPU, minutes
    python -m benchmarks.speed experiment=speed profile=paper       # a GPU

``conf/experiment/speed.yaml`` (``kind: speed``); the sizes are the ``speed:`` block of
``conf/profile/<profile>.yaml`` (every field documented in ``conf/profile/paper.yaml``); ``device``,
``threads``, ``seed`` and ``progress`` come from the train config. Two sections, one CSV row per
measured cell:

* ``train``: THE train step of the runs, timed by :func:`benchmarks.timing.time_train_steps`
  (:func:`benchmarks.loop.train_step`: forward, task loss + MoE auxiliary loss, backward, optimizer
  step with the runs' parameter groups; one fixed random batch already on the device, no data
  loading) for every model of a setting: the Figure 2 LDS layer, the Figure 4 induction-heads model,
  the Table I robotics models (with the paper's step time beside them). A setting names its ``task``:
  its shapes' random batches (:class:`tasks.base.RandomTask`, the base-class loss) and its default
  optimizer (merged with the setting's optional ``optimizer``) are the runs';
* ``mixer``: one mixer alone, forward (``fwd``) and forward+backward of ``sum(y)`` (``fwd_bwd``; not a
  training step), at a stated batch, width and dtype, for lengths 256 ... 65,536; every backend variant
  is its own row (STU forms, flashfftconv, SDPA, flash-attn, flex attention, mamba-ssm,
  torch.compile on/off).

Timing (:func:`benchmarks.timing.time_fn`, shared with Table I): CUDA events after warm-up (CUDA),
``time.perf_counter`` (CPU, threads recorded); the median of the repeats is ``time_ms``. A variant
that is not available here gives one row with status ``unavailable``; a failure gives ``error``
(message in ``error``); running out of memory gives ``oom`` and the longer lengths of that curve
``skipped``. Nothing stops the run.

CSV columns (documented; tests check them): see ``COLUMNS``. Outputs:
``<paths.results>/speed/<profile>/speed.csv``, ``speed.md`` (tables) and ``record.json`` (config,
commit, versions, device, every row, wall time), and ``<paths.plots>/speed/<profile>/speed.png``
(log-log time vs length per mixer, with the slope fitted over the upper half of each curve in the
legend).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import zlib
import zlib
import math
import os
import pathlib
import sys
import time
import traceback
from typing import Any, Callable

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

import models
import models.spectral as spectral
from benchmarks import loop, timing
from benchmarks.config import CONF_DIR, ConfigError, hydra_entry, task_class
from benchmarks.records import atomic_write_csv, atomic_write_json, atomic_write_text, device_info, git_commit, package_versions, save_diff
from benchmarks.timing import peak_memory_mb, require_int, require_kind, require_number, saved_tensor_mb, time_fn
from models.attention import Attention
from tasks.base import RandomTask, available_tasks

# Every CSV row has exactly these columns, in this order.
COLUMNS = [
    "section",         # train | mixer
    "setting",         # train: fig2_lds | fig4_induction_heads | table1_ant ...; mixer: sweep
    "label",           # train: model label in the setting; mixer: <mixer>-<variant>
    "name",            # registry name (conf/model or conf/mixer)
    "pass",            # train_step | fwd | fwd_bwd
    "dtype",           # float32 | bfloat16 (autocast)
    "compile",         # torch.compile on the model / mixer (True | False)
    "batch",
    "seq_len",
    "width",
    "params",
    "backend",         # models.backends() after the cell ran (e.g. fft=torch,stu_form=kernel)
    "status",          # ok | oom | error | unavailable | skipped
    "error",           # why, when status is not ok
    "time_ms",         # median over repeats
    "time_min_ms",
    "time_p25_ms",
    "time_p75_ms",
    "repeats",
    "first_call_ms",   # the first call (includes torch.compile, filter set-up, allocator warm-up)
    "peak_mem_mb",     # CUDA: peak allocated during one timed call, minus what was allocated before
    "saved_mb",        # bytes the forward saved for backward (device independent; distinct storages)
    "tokens_per_s",    # batch * seq_len / time
    "gbps",            # mixer fwd only: (input + output bytes) / time
    "bw_frac",         # gbps / measured device copy bandwidth
    "slope",           # mixer rows: d log(time) / d log(length) fitted over the curve's upper half
    "slope_range",     # lengths the slope was fitted over, e.g. 1024-4096
    "paper_ms",        # the paper's Table I step time, where there is one
    "filters",         # STU/STU-T filters: exact (eigenvectors) | standin (random, same shape; long L)
    "timer",           # cuda_events | perf_counter
    "device",          # cpu | cuda:0
    "device_name",     # GPU name or CPU model
    "threads",         # torch.get_num_threads()
    "torch",           # torch version
    "git_commit",
    "profile",         # smoke | paper
    "date",
]


# ------------------------------------------------------------------------------------------------
# A flex-attention variant of the attention mixer (benchmark only; tested equal to SDPA).
# ------------------------------------------------------------------------------------------------

class FlexAttention(Attention):
    """:class:`models.attention.Attention` computed with ``torch.nn.attention.flex_attention``
    (compiled on CUDA): causal mask, optional sliding window and logit softcap as score_mod."""

    _compiled: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        if self.position == "alibi":
            raise NotImplementedError("FlexAttention benchmark variant: alibi not wired")
        B, L, _ = x.shape
        q, k, v = self._qkv(x)
        window, cap = self.window, self.softcap

        def mask_mod(b, h, qi, kv):
            m = kv <= qi
            if window:
                m = m & (qi - kv < window)
            return m

        score_mod = None
        if cap:
            def score_mod(score, b, h, qi, kv):
                return cap * torch.tanh(score / cap)
        fn = flex_attention
        if x.is_cuda:
            fn = self._compiled.setdefault("flex", torch.compile(flex_attention, dynamic=False))
        block_mask = create_block_mask(mask_mod, None, None, L, L, device=x.device)
        y = fn(q, k, v, score_mod=score_mod, block_mask=block_mask)
        self.backend = "attention=flex"
        return self.out(y.transpose(1, 2).reshape(B, L, self.width))


# ------------------------------------------------------------------------------------------------
# Environment.
# ------------------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    info = device_info(device)
    return str(info.get("gpu") or info.get("cpu") or device)


def _importable(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except Exception:  # noqa: BLE001  (broken installs count as unavailable)
        return False


def requirement_missing(req: str, device: torch.device) -> str | None:
    """None when requirement ``req`` is met on this machine, else why not."""
    if req == "cuda":
        return None if device.type == "cuda" else "needs CUDA"
    if req == "flex_attention":
        return None if _importable("torch.nn.attention.flex_attention") else "torch has no flex_attention"
    if req == "mamba_ssm":  # the SSD kernels models/mamba2.py imports, not only the package
        from models import mamba2
        return None if mamba2.mamba_chunk_scan_combined is not None else \
            f"mamba_ssm's SSD kernels not importable ({mamba2.FAST_PATH_ERROR})"
    if req in ("flashfftconv", "flash_attn", "triton"):
        return None if _importable(req) else f"{req} not importable"
    return f"unknown requirement {req!r}"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_ctx(device: torch.device, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


@contextlib.contextmanager
def standin_filters(max_exact_len: int):
    """Above ``max_exact_len`` the STU filters (a dense float64 eigendecomposition, O(L^3)) are
    replaced by random orthonormal columns of the same shape: the time of a layer does not depend
    on its filter values, and eigh of a 65,536 x 65,536 matrix is out of reach."""
    original = spectral._filters_and_eigs

    def patched(seq_len: int, k: int, variant: str):
        if seq_len <= max_exact_len:
            return original(seq_len, k, variant)
        g = torch.Generator().manual_seed(seq_len * 1000 + k)
        q, _ = torch.linalg.qr(torch.randn(seq_len, k, generator=g, dtype=torch.float64))
        return q, torch.logspace(0, -k, k, dtype=torch.float64)

    spectral._filters_and_eigs = patched
    try:
        yield
    finally:
        spectral._filters_and_eigs = original


# ------------------------------------------------------------------------------------------------
# Measurement (the timer, peak memory and saved-activation size are benchmarks.timing's).
# ------------------------------------------------------------------------------------------------

def copy_bandwidth_gbps(device: torch.device, mb: float) -> float:
    """Measured device copy bandwidth (read + write bytes / time), median of a few copies."""
    n = int(mb * 2**20 / 4)
    x = torch.empty(n, device=device).uniform_()
    y = torch.empty_like(x)
    r = time_fn(lambda: y.copy_(x), device, warmup=2, repeats=10, min_repeats=3, max_seconds=1.0)
    return 2 * n * 4 / (r["time_ms"] / 1e3) / 1e9


def is_oom(e: BaseException) -> bool:
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    msg = str(e).lower()
    return "out of memory" in msg or "can't allocate memory" in msg or "cannot allocate memory" in msg


def _free(device):
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _fail_status(e: BaseException) -> tuple[str, str]:
    if is_oom(e):
        return "oom", str(e).splitlines()[0][:300] if str(e) else type(e).__name__
    msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return "error", msg[:300]



# ------------------------------------------------------------------------------------------------
# Cells.
# ------------------------------------------------------------------------------------------------

def _filters_kind(L: int, max_exact: int, name: str) -> str:
    return "" if not name.startswith(("stu", "flash_stu")) else ("exact" if L <= max_exact else "standin")


def task_default_optimizer(task_name: str) -> dict[str, Any]:
    """The default optimizer of ``conf/task/<task_name>.yaml``'s class (no task is built)."""
    if task_name not in available_tasks():
        raise ConfigError(f"unknown task {task_name!r}; valid tasks: {', '.join(available_tasks())}")
    target = OmegaConf.load(CONF_DIR / "task" / f"{task_name}.yaml").get("_target_")
    return dict(task_class({"_target_": target}).default_optimizer)


def setting_optimizer(setting: dict[str, Any]) -> dict[str, Any]:
    """The runs' optimizer of a train setting: its task's default merged with its ``optimizer``."""
    spec = task_default_optimizer(str(setting["task"]))
    spec.update({k: v for k, v in (setting.get("optimizer") or {}).items() if v is not None})
    return spec


def setting_task(setting: dict[str, Any]) -> RandomTask:
    """Random batches of the setting's shapes (the step time does not depend on the values)."""
    if setting.get("vocab_size") is not None:
        return RandomTask(int(setting["seq_len"]), vocab_size=int(setting["vocab_size"]))
    return RandomTask(int(setting["seq_len"]), d_in=int(setting["d_in"]), d_out=int(setting["d_out"]))


def _entry_overrides(setting: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    overrides = {**(setting.get("common") or {}), **(entry.get("overrides") or {})}
    if "mixer_options" in (setting.get("common") or {}) and "mixer_options" in (entry.get("overrides") or {}):
        overrides["mixer_options"] = {**setting["common"]["mixer_options"], **entry["overrides"]["mixer_options"]}
    return overrides


def train_cell(setting: dict[str, Any], entry: dict[str, Any], dtype: str, compile_: bool,
               device: torch.device, prof: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """One model's train step, timed by :func:`benchmarks.timing.time_train_steps` (float32 weights;
    ``dtype`` other than float32: under torch.autocast)."""
    task = setting_task(setting)
    B, L = int(setting["batch"]), task.seq_len
    torch.manual_seed(seed)
    model = models.build_model(entry["model"], **task.model_shapes(), **_entry_overrides(setting, entry)).to(device)
    fwd = torch.compile(model) if compile_ else None
    r = timing.time_train_steps(model, task, B, setting_optimizer(setting), device, torch.float32,
                                warmup=int(prof["warmup"]), repeats=int(prof["repeats"]),
                                min_repeats=int(prof["min_repeats"]), max_seconds=float(prof["max_seconds_per_cell"]),
                                seed=seed, autocast=None if dtype == "float32" else DTYPES[dtype],
                                memory=True, forward_model=fwd)
    if compile_:
        r["saved_mb"] = None  # saved tensors of a compiled graph are not the eager ones
    row = {k: v for k, v in r.items() if k in COLUMNS}
    row.update(width=getattr(model, "width", ""), tokens_per_s=B * L / (r["time_ms"] / 1e3))
    if r["not_applied"]:
        raise FloatingPointError(f"{r['not_applied']} of the timed steps had a non-finite loss (not applied)")
    return row


def build_sweep_mixer(variant: dict[str, Any], width: int, L: int) -> nn.Module:
    if variant.get("target"):  # a class replacing the yaml's _target_, with the yaml's fields
        fields = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "mixer" / f"{variant['mixer']}.yaml"), resolve=True)
        fields.pop("_target_", None)
        fields.update(variant.get("overrides") or {})
        return models.build_mixer(str(variant["target"]), width=width, seq_len=L, **fields)
    return models.build_mixer(variant["mixer"], width=width, seq_len=L, **(variant.get("overrides") or {}))


def mixer_cell(variant: dict[str, Any], L: int, pas: str, dtype: str, compile_: bool, device: torch.device,
               sweep: dict[str, Any], prof: dict[str, Any], copy_bw: float) -> dict[str, Any]:
    """One mixer alone: forward, or forward + backward of sum(y) (not a training step: no loss, no
    optimizer)."""
    B, W = int(sweep["batch"]), int(sweep["width"])
    mixer = build_sweep_mixer(variant, W, L).to(device)
    row: dict[str, Any] = {"params": models.count_params(mixer), "width": W}
    x = torch.randn(B, L, W, device=device, requires_grad=(pas == "fwd_bwd"))
    fn_mixer = torch.compile(mixer) if compile_ else mixer

    def fwd():
        with autocast_ctx(device, dtype):
            return fn_mixer(x)

    if pas == "fwd":
        def call():
            with torch.no_grad():
                fwd()
    else:
        def call():
            fwd().float().sum().backward()
            x.grad = None
            mixer.zero_grad(set_to_none=True)

    r = time_fn(call, device, int(prof["warmup"]), int(prof["repeats"]), int(prof["min_repeats"]),
                float(prof["max_seconds_per_cell"]))
    row.update({k: v for k, v in r.items() if k in COLUMNS})
    row["peak_mem_mb"] = peak_memory_mb(call, device)
    if pas == "fwd_bwd" and not compile_:
        row["saved_mb"] = saved_tensor_mb(fwd)
    row["backend"] = models.backends(mixer)
    row["tokens_per_s"] = B * L / (row["time_ms"] / 1e3)
    if pas == "fwd":
        elem = 2 if dtype in ("bfloat16", "float16") else 4
        row["gbps"] = 2 * B * L * W * elem / (row["time_ms"] / 1e3) / 1e9
        row["bw_frac"] = row["gbps"] / copy_bw if copy_bw else None
    return row


# ------------------------------------------------------------------------------------------------
# Slopes, plot, Markdown.
# ------------------------------------------------------------------------------------------------

def fit_slope(points: list[tuple[int, float]]) -> tuple[float | None, str]:
    """Least-squares slope of log(time) on log(length) over the upper half of the points."""
    pts = sorted(points)
    if len(pts) < 2:
        return None, ""
    upper = pts[len(pts) // 2:] if len(pts) >= 4 else pts[-2:]
    xs = [math.log(p[0]) for p in upper]
    ys = [math.log(p[1]) for p in upper]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((a - mx) ** 2 for a in xs)
    if sxx == 0:
        return None, ""
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sxx
    return slope, f"{upper[0][0]}-{upper[-1][0]}"


def add_slopes(rows: list[dict[str, Any]]) -> None:
    curves: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["section"] == "mixer":
            curves.setdefault((r["label"], r["pass"], r["dtype"], r["compile"]), []).append(r)
    for rs in curves.values():
        ok = [(int(r["seq_len"]), float(r["time_ms"])) for r in rs if r["status"] == "ok"]
        slope, rng = fit_slope(ok)
        for r in rs:
            if r["status"] == "ok" and slope is not None:
                r["slope"], r["slope_range"] = round(slope, 3), rng


def _fmt(v, digits=3) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        if v >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


_SHADE_MAPS = {"stu": "Blues", "stu_t": "Oranges", "s4d": "Greens", "mamba2": "Reds", "attention": "Purples",
               "sliding_attention": "Greys"}


def _family(label: str) -> str:
    """The mixer a speed variant belongs to: its label up to the first '-' (``stu-kernel-freq`` -> stu)."""
    return label.split("-", 1)[0]


def _shades(family: str, n: int) -> list:
    """``n`` distinguishable shades of the family's colour (darkest first); unknown families get tab10."""
    import matplotlib

    name = _SHADE_MAPS.get(family)
    if name is None:
        base = matplotlib.colormaps["tab10"](zlib.crc32(family.encode()) % 10)
        return [base] * n
    cmap = matplotlib.colormaps[name]
    return [cmap(0.95 - 0.5 * i / max(1, n - 1)) if n > 1 else cmap(0.8) for i in range(n)]


def make_plot(rows: list[dict[str, Any]], path: pathlib.Path, meta: dict[str, Any]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mix = [r for r in rows if r["section"] == "mixer" and r["status"] == "ok"]
    if not mix:
        return False
    passes = [p for p in ("fwd", "fwd_bwd") if any(r["pass"] == p for r in mix)]
    # One colour family per mixer (the model colours of every other figure: benchmarks.report.COLORS),
    # one shade per implementation variant in it; the line style says the dtype, the marker compile.
    families: dict[str, list[str]] = {}
    for label in sorted({r["label"] for r in mix}):
        families.setdefault(_family(label), []).append(label)
    colour = {}
    for fam, labels in families.items():
        shades = _shades(fam, len(labels))
        colour.update({label: shades[i] for i, label in enumerate(labels)})
    fig, axes = plt.subplots(1, len(passes), figsize=(6.5 * len(passes) + 3.2, 5.5), squeeze=False)
    for ax, pas in zip(axes[0], passes):
        curves: dict[tuple, list[dict[str, Any]]] = {}
        for r in mix:
            if r["pass"] == pas:
                curves.setdefault((r["label"], r["dtype"], r["compile"]), []).append(r)
        for (label, dt, comp), rs in sorted(curves.items(), key=lambda kv: (_family(kv[0][0]), kv[0])):
            rs = sorted(rs, key=lambda r: int(r["seq_len"]))
            name = label + ("" if dt == "float32" else f" {dt}") + (" compiled" if comp else "")
            slope = rs[-1].get("slope")
            name += f" (slope {slope:.2f})" if isinstance(slope, float) else ""
            ax.plot([int(r["seq_len"]) for r in rs], [float(r["time_ms"]) for r in rs],
                    "-" if dt == "float32" else "--", marker="s" if comp else "o", ms=3, color=colour[label],
                    label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel("time (ms, median)")
        ax.set_title(f"mixer {'forward' if pas == 'fwd' else 'forward + backward'}")
        ax.grid(True, which="both", alpha=0.3)
    # One legend beside the panels: every curve once (a curve may be in one panel only), with its
    # fitted log-log slope in each panel.
    entries: dict[str, Any] = {}
    slopes: dict[str, list[str]] = {}
    for ax, pas in zip(axes[0], passes):
        for h, n in zip(*ax.get_legend_handles_labels()):
            key, _, slope = n.partition(" (slope ")
            entries.setdefault(key, h)
            if slope:
                slopes.setdefault(key, []).append(f"{'fwd' if pas == 'fwd' else 'fwd+bwd'} {slope.rstrip(')')}")
    names = [k + (f" (slope {', '.join(slopes[k])})" if k in slopes else "") for k in entries]
    axes[0][-1].legend(list(entries.values()), names, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       borderaxespad=0.0, title="mixer variant (line: dtype; marker: compiled)", title_fontsize=7)
    s = meta["settings"]["sweep"]
    fig.suptitle(f"{meta['device_name']} ({meta['device']}, {meta['threads']} threads), batch {s['batch']}, "
                 f"width {s['width']}; torch {meta['versions'].get('torch')}, commit {meta['git_commit'][:12]}, "
                 f"profile {meta['profile']}, {meta['date']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    png_meta = {"Title": "Flash STU benchmark suite: mixer time vs sequence length",
                "Description": json.dumps({k: meta[k] for k in ("device", "device_name", "threads", "git_commit",
                                                                 "profile", "date", "versions")}, default=str),
                "Software": f"benchmarks/speed.py, torch {meta['versions'].get('torch')}"}
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, metadata=png_meta)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def make_markdown(rows: list[dict[str, Any]], meta: dict[str, Any], plot_rel: str | None) -> str:
    out = [f"# Speed: {meta['device_name']} ({meta['date']})", ""]
    out.append(f"- device: `{meta['device']}` {meta['device_name']}; torch threads {meta['threads']}; "
               f"load average at start/end {meta.get('loadavg_start')} / {meta.get('loadavg_end')}")
    out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    out.append(f"- git commit `{meta['git_commit']}`; profile `{meta['profile']}`; "
               f"command `{meta['command']}`; wall {meta.get('wall_s', 0):.0f} s")
    out.append(f"- timer: {'CUDA events' if meta['device'].startswith('cuda') else 'time.perf_counter'}, median of "
               f"up to {meta['settings']['repeats']} repeats after {meta['settings']['warmup']} warm-up calls; "
               f"measured copy bandwidth {meta['copy_bandwidth_gbps']:.1f} GB/s")
    out.append("")

    train = [r for r in rows if r["section"] == "train"]
    for setting in dict.fromkeys(r["setting"] for r in train):
        rs = [r for r in train if r["setting"] == setting]
        sset = meta["settings"]["train"]["settings"][setting]
        opt = meta.get("train_optimizers", {}).get(setting, {})
        out += [f"## Train step: {setting}", "", f"{sset.get('title', '')}; batch {sset['batch']}, length "
                f"{sset['seq_len']}; `benchmarks.loop.train_step` with the runs' optimizer ({sset.get('task')} task "
                f"default: {opt.get('name')} lr {opt.get('lr')}, weight decay {opt.get('weight_decay') or 0}, the "
                f"runs' parameter groups), task loss + MoE auxiliary loss.", ""]
        has_paper = any(r.get("paper_ms") not in (None, "") for r in rs)
        head = ["model", "registry", "dtype", "compile", "params", "step ms", "p25-p75", "peak MB",
                "saved MB", "backend", "status"] + (["paper ms"] if has_paper else [])
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rs:
            cells = [r["label"], r["name"], r["dtype"], str(r["compile"]), _fmt(r.get("params")),
                     _fmt(r.get("time_ms")),
                     (f"{_fmt(r.get('time_p25_ms'))}-{_fmt(r.get('time_p75_ms'))}" if r["status"] == "ok" else ""),
                     _fmt(r.get("peak_mem_mb")), _fmt(r.get("saved_mb")), f"`{r.get('backend', '')}`",
                     r["status"] + (f": {r['error']}" if r.get("error") else "")]
            if has_paper:
                cells.append(_fmt(r.get("paper_ms")))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        ok = {(r["label"], r["dtype"], r["compile"]): r["time_ms"] for r in rs if r["status"] == "ok"}
        for dt, comp in dict.fromkeys((r["dtype"], r["compile"]) for r in rs):
            plain, fast = ok.get(("stu_plain", dt, comp)), ok.get(("stu_fast", dt, comp))
            if plain and fast:
                out.append(f"- STU step ({dt}, compile {comp}): plain (per-filter) path {plain:.2f} ms, fast "
                           f"(kernel form, frequency domain) {fast:.2f} ms: {plain / fast:.1f}x faster.")
            t_stu_t, t_tr, t_m2 = (ok.get((k, dt, comp)) for k in ("stu_t", "transformer", "mamba2"))
            if t_stu_t and t_tr and t_m2 and has_paper:
                out.append(f"- STU-T step / Transformer step = {t_stu_t / t_tr:.2f} (paper 11.4/21.3 = 0.54; "
                           f"target <= 0.5); STU-T / Mamba-2 = {t_stu_t / t_m2:.2f} (paper 0.28; target < 0.33) "
                           f"({dt}, compile {comp}).")
        out.append("")

    mix = [r for r in rows if r["section"] == "mixer"]
    if mix:
        s = meta["settings"]["sweep"]
        out += ["## Mixer time against sequence length", "",
                f"Batch {s['batch']}, width {s['width']}; median ms. `slope`: least-squares slope of "
                f"log(time) on log(length) over the upper half of the curve.", ""]
        if plot_rel:
            out += [f"![mixer time vs length]({plot_rel})", ""]
        lengths = sorted({int(r["seq_len"]) for r in mix if r["seq_len"] != ""})
        for pas in [p for p in ("fwd", "fwd_bwd") if any(r["pass"] == p for r in mix)]:
            out += [f"### {'forward' if pas == 'fwd' else 'forward + backward'}", ""]
            head = ["mixer/variant", "dtype", "compile"] + [str(L) for L in lengths] + ["slope", "over"]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            curves: dict[tuple, dict[int, dict[str, Any]]] = {}
            for r in mix:
                if r["pass"] == pas and r["status"] != "unavailable":
                    curves.setdefault((r["label"], r["dtype"], r["compile"]), {})[int(r["seq_len"])] = r
            for (label, dt, comp), by_len in curves.items():
                cells = []
                for L in lengths:
                    r = by_len.get(L)
                    cells.append("" if r is None else (_fmt(r["time_ms"]) if r["status"] == "ok" else r["status"]))
                any_ok = next((r for r in by_len.values() if r.get("slope") not in (None, "")), {})
                out.append("| " + " | ".join([label, dt, str(comp)] + cells +
                                             [_fmt(any_ok.get("slope")), any_ok.get("slope_range", "")]) + " |")
            out.append("")
        stu_bw = [r for r in mix if r["pass"] == "fwd" and r["status"] == "ok" and r["label"].startswith("stu")
                  and r.get("bw_frac") not in (None, "")]
        if stu_bw:
            best = max(stu_bw, key=lambda r: float(r["bw_frac"]))
            out += [f"- Best STU/STU-T forward as memory bandwidth: {best['label']} at L={best['seq_len']}: "
                    f"{float(best['gbps']):.2f} GB/s of (input + output) bytes = {float(best['bw_frac']):.1%} of "
                    f"the measured copy bandwidth.", ""]
    missing = [r for r in rows if r["status"] in ("unavailable", "error")]
    if missing:
        out += ["## Not measured here", ""]
        seen = set()
        for r in missing:
            key = (r["label"], r["status"], r.get("error"))
            if key not in seen:
                seen.add(key)
                out.append(f"- {r['section']} `{r['label']}` ({r['dtype']}, compile {r['compile']}): "
                           f"{r['status']}: {r.get('error', '')}")
        out.append("")
    return "\n".join(out)




# ------------------------------------------------------------------------------------------------
# The run.
# ------------------------------------------------------------------------------------------------

def _log(cfg, msg: str):
    if cfg.get("progress", True):
        print(msg, file=sys.stderr, flush=True)


PASSES = ("fwd", "fwd_bwd")
REQUIREMENTS = ("cuda", "flex_attention", "flashfftconv", "flash_attn", "mamba_ssm", "triton")


def _names(key: str, value, valid) -> list[str] | None:
    if value is None:
        return None
    value = [value] if isinstance(value, str) else list(value)
    bad = [v for v in value if v not in valid]
    if bad:
        raise ConfigError(f"unknown {key} {bad}; valid: {', '.join(map(str, valid))}")
    return value


def check(cfg: DictConfig) -> dict[str, Any]:
    """The speed sizes (``cfg.profile.speed``) and names, checked before any work or file."""
    require_kind(cfg, "speed", "benchmarks.speed")
    if OmegaConf.select(cfg, "profile.speed") is None:
        raise ConfigError(f"profile {cfg.profile.get('name')!r} has no speed: block (conf/profile/<profile>.yaml)")
    try:
        prof = OmegaConf.to_container(cfg.profile.speed, resolve=True)
        device = loop.resolve_device(str(cfg.device))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"profile.speed does not resolve: {e}") from None
    require_int("seed", cfg.get("seed"), 0)
    if cfg.get("threads") is not None:
        require_int("threads", cfg.threads)
    _names("profile.speed.dtypes", prof.get("dtypes"), list(DTYPES))
    for c in prof.get("compile") or []:
        if not isinstance(c, bool):
            raise ConfigError(f"profile.speed.compile entries must be true/false, got {c!r}")
    require_int("profile.speed.warmup", prof.get("warmup"), 0)
    require_int("profile.speed.repeats", prof.get("repeats"))
    require_int("profile.speed.min_repeats", prof.get("min_repeats"))
    require_number("profile.speed.max_seconds_per_cell", prof.get("max_seconds_per_cell"), positive=True, allow_none=False)
    require_int("profile.speed.exact_filters_max_len", prof.get("exact_filters_max_len"))
    require_number("profile.speed.time_budget_s", prof.get("time_budget_s"), positive=True)
    require_number("profile.speed.copy_bandwidth_mb", prof.get("copy_bandwidth_mb"), positive=True, allow_none=False)
    tr = prof.get("train") or {}
    settings = tr.get("settings") or {}
    _names("profile.speed.train.settings_only", tr.get("settings_only"), list(settings))
    labels = sorted({lab for st in settings.values() for lab in (st.get("models") or {})})
    _names("profile.speed.train.models_only", tr.get("models_only"), labels)
    for sname, st in settings.items():
        key = f"profile.speed.train.settings.{sname}"
        require_int(f"{key}.seq_len", st.get("seq_len"))
        require_int(f"{key}.batch", st.get("batch"))
        if st.get("vocab_size") is not None:
            require_int(f"{key}.vocab_size", st.get("vocab_size"))
        else:
            require_int(f"{key}.d_in", st.get("d_in"))
            require_int(f"{key}.d_out", st.get("d_out"))
        if not st.get("task"):
            raise ConfigError(f"{key}.task is not set (its default optimizer is the runs'); valid tasks: "
                              f"{', '.join(available_tasks())}")
        timing.require_optimizer(setting_optimizer(st))
        for label, entry in (st.get("models") or {}).items():
            timing.require_models(f"{key}.models.{label}.model", [entry.get("model")])
    sw = prof.get("sweep") or {}
    if sw.get("enabled", True):
        variants = sw.get("variants") or {}
        mixers = sorted({v.get("mixer") for v in variants.values()})
        _names("profile.speed.sweep.only", sw.get("only"), sorted(variants) + mixers)
        for L in sw.get("lengths") or []:
            require_int("profile.speed.sweep.lengths[]", L)
        require_int("profile.speed.sweep.batch", sw.get("batch"))
        require_int("profile.speed.sweep.width", sw.get("width"))
        _names("profile.speed.sweep.passes", sw.get("passes"), list(PASSES))
        for label, v in variants.items():
            if v.get("mixer") not in models.available_mixers():
                raise ConfigError(f"unknown mixer {v.get('mixer')!r} in profile.speed.sweep.variants.{label}; valid "
                                  f"mixers: {', '.join(models.available_mixers())}")
            _names(f"profile.speed.sweep.variants.{label}.requires", v.get("requires") or [], list(REQUIREMENTS))
    return {"prof": prof, "device": device}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the benchmark of ``conf/experiment/speed.yaml`` at ``cfg.profile.speed``; return paths and rows."""
    t_start = time.perf_counter()
    c = check(cfg)
    prof, device = c["prof"], c["device"]
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    profile, exp = str(cfg.profile.name), str(cfg.experiment_name)
    out_dir = pathlib.Path(cfg.paths.results) / exp / profile
    plot_dir = pathlib.Path(cfg.paths.plots) / exp / profile
    date = datetime.date.today().isoformat()

    versions = package_versions()
    commit = git_commit()
    common = {"device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "git_commit": commit, "profile": profile, "date": date}
    tr = prof.get("train", {})
    meta: dict[str, Any] = {**common, "experiment": exp, "kind": "speed", "versions": versions,
                            "device_info": device_info(device), "settings": prof, "command": " ".join(sys.argv),
                            "loadavg_start": _loadavg(), "config": OmegaConf.to_container(cfg, resolve=True),
                            "train_optimizers": {k: setting_optimizer(v) for k, v in (tr.get("settings") or {}).items()}}
    meta["copy_bandwidth_gbps"] = copy_bandwidth_gbps(device, float(prof.get("copy_bandwidth_mb", 64)))
    rows: list[dict[str, Any]] = []

    budget = prof.get("time_budget_s")

    def emit(base: dict[str, Any], fn: Callable[[], dict[str, Any]] | None, status: str = "ok", error: str = ""):
        if fn is not None and budget and time.perf_counter() - t_start > float(budget):
            fn, status, error = None, "skipped", f"time budget of {budget} s for the whole run used up"
        row = dict.fromkeys(COLUMNS, "")
        row.update(common)
        row.update(base)
        if fn is not None:
            try:
                row.update({k: v for k, v in fn().items() if v is not None})
                row["status"] = "ok"
            except Exception as e:  # noqa: BLE001  every failure is a row, never a crash
                row["status"], row["error"] = _fail_status(e)
                if row["status"] == "error" and cfg.get("progress", True):
                    traceback.print_exc(limit=3, file=sys.stderr)
            finally:
                _free(device)
        else:
            row["status"], row["error"] = status, error
        for k, v in list(row.items()):
            if isinstance(v, float):
                row[k] = round(v, 4)
        rows.append(row)
        _log(cfg, f"[{row['status']}] {row['section']} {row['setting']} {row['label']} {row['pass']} "
                  f"L={row['seq_len']} {row['dtype']} compile={row['compile']}: "
                  f"{row['time_ms'] if row['status'] == 'ok' else row['error']}" + (
                      f" ms  ({row['backend']})" if row["status"] == "ok" else ""))
        return row

    max_exact = int(prof.get("exact_filters_max_len", 8192))
    with standin_filters(max_exact):
        # ---- train steps (THE train step, timed by benchmarks.timing) ------------------------------
        if tr.get("enabled", True):
            for sname, setting in tr["settings"].items():
                if tr.get("settings_only") and sname not in tr["settings_only"]:
                    continue
                for label, entry in setting["models"].items():
                    if tr.get("models_only") and label not in tr["models_only"]:
                        continue
                    for dtype in tr.get("dtypes", prof["dtypes"]):
                        for comp in tr.get("compile", prof["compile"]):
                            base = {"section": "train", "setting": sname, "label": label, "name": entry["model"],
                                    "pass": "train_step", "dtype": dtype, "compile": bool(comp),
                                    "batch": setting["batch"], "seq_len": setting["seq_len"],
                                    "paper_ms": entry.get("paper_ms", ""),
                                    "filters": _filters_kind(int(setting["seq_len"]), max_exact, entry["model"])}
                            emit(base, lambda: train_cell(setting, entry, dtype, bool(comp), device, prof, seed))

        # ---- mixer sweep ----------------------------------------------------------------------
        sw = prof.get("sweep", {})
        if sw.get("enabled", True):
            for label, variant in sw["variants"].items():
                if sw.get("only") and label not in sw["only"] and variant["mixer"] not in sw["only"]:
                    continue
                base0 = {"section": "mixer", "setting": "sweep", "label": label, "name": variant["mixer"],
                         "batch": sw["batch"], "width": sw["width"]}
                why = next((w for w in (requirement_missing(r, device) for r in variant.get("requires", [])) if w),
                           None)
                dtypes = [d for d in prof["dtypes"] if d in variant.get("dtypes", prof["dtypes"])]
                if why is None and not dtypes:
                    why = f"needs dtype {variant.get('dtypes')}; this profile runs {prof['dtypes']}"
                if why:
                    emit({**base0, "pass": "", "dtype": ",".join(variant.get("dtypes", prof["dtypes"])),
                          "compile": False, "seq_len": ""}, None, "unavailable", why)
                    continue
                for dtype in dtypes:
                    for comp in prof["compile"]:
                        for pas in sw["passes"]:
                            stop = ""
                            for L in sw["lengths"]:
                                base = {**base0, "pass": pas, "dtype": dtype, "compile": bool(comp), "seq_len": L,
                                        "filters": _filters_kind(L, max_exact, variant["mixer"])}
                                if variant.get("max_len") and L > int(variant["max_len"]):
                                    emit(base, None, "skipped", f"beyond this variant's max_len {variant['max_len']}")
                                    continue
                                if stop:
                                    emit(base, None, "skipped", stop)
                                    continue
                                r = emit(base, lambda: mixer_cell(variant, L, pas, dtype, bool(comp), device, sw,
                                                                  prof, meta["copy_bandwidth_gbps"]))
                                if r["status"] == "oom":
                                    stop = f"out of memory at length {L}"
                                elif r["status"] == "error":
                                    stop = f"error at length {L}"
                                elif r["status"] != "ok":  # skipped: the time budget is used up
                                    stop = r["error"]
                                elif float(r["time_ms"]) > float(sw.get("stop_after_ms", float("inf"))):
                                    stop = f"length {L} took {float(r['time_ms']):.0f} ms > stop_after_ms"

    add_slopes(rows)
    meta["loadavg_end"] = _loadavg()
    meta["wall_s"] = time.perf_counter() - t_start
    csv_path, md_path, json_path = out_dir / "speed.csv", out_dir / "speed.md", out_dir / "record.json"
    png_path = plot_dir / "speed.png"
    plotted = make_plot(rows, png_path, meta)
    try:
        plot_rel = os.path.relpath(png_path, md_path.parent) if plotted else None
    except ValueError:
        plot_rel = str(png_path) if plotted else None
    atomic_write_csv(csv_path, rows)
    atomic_write_text(md_path, make_markdown(rows, meta, plot_rel))
    backends = {f"{r['section']}/{r['setting']}/{r['label']}": r["backend"] for r in rows if r.get("backend")}
    atomic_write_json(json_path, {**meta, "git_commit": commit, "git_diff": save_diff(json_path.parent, commit),
                                  "backends": backends,
                                  "wall_time_s": round(meta["wall_s"], 2), "columns": COLUMNS, "rows": rows,
                                  "files": {"csv": str(csv_path), "md": str(md_path),
                                            "png": str(png_path) if plotted else None}})
    _log(cfg, f"wrote {csv_path}, {md_path}, {json_path}" + (f", {png_path}" if plotted else "") +
         f" in {meta['wall_s']:.0f} s")
    return {"csv": csv_path, "md": md_path, "json": json_path, "png": png_path if plotted else None, "rows": rows}


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


main = hydra_entry(run)


if __name__ == "__main__":
    from benchmarks.speed import main as _main

    _main()
