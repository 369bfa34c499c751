"""THE timing of train steps, and Table I (model specifications for Ant-v1 with the time per train step).

    python -m benchmarks.timing experiment=table1_timing profile=smoke      # or benchmarks.reproduce
    python -m benchmarks.timing experiment=table1_timing profile=paper device=cuda

:func:`time_train_steps` times :func:`benchmarks.loop.train_step` (task loss + the model's MoE
auxiliary loss, backward, clipping when the spec sets it, optimizer step) with the optimizer of
:func:`benchmarks.loop.make_optimizer` (the runs' parameter groups: no weight decay on 1-D weights,
special groups such as S4D's) on one fixed batch already on the device (no data loading). It is used
by Table I here and by the train section of ``benchmarks/speed.py``; nothing else in the suite times
a training step. The timer (:func:`time_fn`): CUDA events after ``torch.cuda.synchronize`` on a GPU,
``time.perf_counter`` on a CPU; the median of the timed calls is ``time_ms``.

Table I (``conf/experiment/table1_timing.yaml``, ``kind: timing``): the four Table I models
(``conf/model/robotics_*.yaml``, unchanged) built for the task's shapes (Ant-v1: 37 inputs
``[x_t, u_t]``, 29 outputs, window ``profile.mujoco_context``), the batch size and optimizer of the
runs (``benchmarks.config.settings``: the profile's ``mujoco_ant`` batch size, the MuJoCo task's
``default_optimizer`` merged with ``optimizer.*``), ``timing.warmup`` warm-up steps and
``timing.repeats`` (= ``profile.robotics_eval.timing_steps``) timed steps on random batches of those
shapes (:class:`tasks.base.RandomTask`: the step time does not depend on the values). Writes, under
``<paths.results>/table1_timing/<profile>/``:

* ``table.md`` / ``table.tex``: our parameters, sizes and ms/step beside the paper's (its own GPU;
  a reference, from ``benchmarks/paper_tables.yaml``, ``table1_ant_models``);
* ``timing.json``: every timed step of every model (ms);
* ``record.json``: config, optimizer and its parameter groups, git commit, package versions, device,
  backends, parameter counts, medians, wall time;

and ``<paths.plots>/table1_timing/<profile>/table1_timing.png`` (ms/step, ours and the paper's).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

import models
from benchmarks import loop
from benchmarks.config import (CONF_DIR, ConfigError, choice, hydra_entry, require_int, require_number, settings,
                               shapes_of)
from benchmarks import tables
from benchmarks.records import REPO, atomic_write_json, atomic_write_text, device_info, git_commit, package_versions, save_diff
from tasks.base import RandomTask

PAPER_FILE = REPO / "benchmarks" / "paper_tables.yaml"


# ------------------------------------------------------------------------------------------ checks
# Small checks shared by the result modules (landscape, speed, filters): every bad value stops the
# command with its key and the valid choices, before any work and before any file is written.
def experiments_of_kind(kind: str) -> list[str]:
    """The experiments (``conf/experiment/*.yaml``) that declare ``kind: <kind>``."""
    out = []
    for p in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        try:
            if (yaml.safe_load(p.read_text()) or {}).get("kind") == kind:
                out.append(p.stem)
        except yaml.YAMLError:
            continue
    return out


def require_kind(cfg: DictConfig, kind: str, module: str) -> None:
    got = cfg.get("kind")
    if got != kind:
        valid = experiments_of_kind(kind)
        raise ConfigError(f"{module} runs experiments of kind {kind!r}; this config is experiment_name="
                          f"{cfg.get('experiment_name')!r} of kind {got!r}. Valid: "
                          + ", ".join(f"experiment={e}" for e in valid))


def require_models(key: str, names: Any) -> list[str]:
    names = [names] if isinstance(names, str) else list(names or [])
    valid = models.available_models()
    if not names:
        raise ConfigError(f"{key} is empty; valid models: {', '.join(valid)}")
    bad = [m for m in names if m not in valid]
    if bad:
        raise ConfigError(f"unknown model(s) {bad} in {key}; valid models: {', '.join(valid)}")
    return [str(m) for m in names]


def dry_run(name: str, shapes: dict[str, Any], overrides: dict[str, Any], device: torch.device,
            dtype: torch.dtype, key: str = "models") -> None:
    """Build model ``name`` with ``overrides`` for ``shapes`` and run a forward and backward on a
    batch of length <= 4 (global RNG untouched): a model that cannot run fails here, named."""
    try:
        with torch.random.fork_rng(devices=[]):
            model = models.build_model(name, **shapes, **overrides).to(device=device, dtype=dtype)
            n = min(int(shapes["seq_len"]), 4)
            if shapes.get("vocab_size"):
                x = torch.zeros(1, n, dtype=torch.long, device=device)
            else:
                x = torch.zeros(1, n, int(shapes["d_in"]), dtype=dtype, device=device)
            y = model(x)
            (y.float().sum() + getattr(model, "aux_loss", torch.zeros(())).to(device).float()).backward()
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"model {name!r} of {key} (overrides {overrides or 'none'}) cannot run with shapes {shapes} "
                          f"on {device} in {str(dtype).replace('torch.', '')}: {type(e).__name__}: {e}") from None


def device_and_dtype(cfg: DictConfig) -> tuple[torch.device, torch.dtype]:
    try:
        return loop.resolve_device(str(cfg.device)), loop.resolve_dtype(str(cfg.dtype))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def require_optimizer(spec: dict[str, Any]) -> dict[str, Any]:
    if str(spec.get("name", "")).lower() not in loop.OPTIMIZERS:
        raise ConfigError(f"unknown optimizer.name {spec.get('name')!r}; valid optimizers: {', '.join(loop.OPTIMIZERS)}")
    require_number("optimizer.lr", spec.get("lr"), positive=True, allow_none=False)
    require_number("optimizer.weight_decay", spec.get("weight_decay"), positive=False, allow_none=True)
    require_number("optimizer.grad_clip", spec.get("grad_clip"), positive=True)
    if (spec.get("schedule") or "constant") not in loop.SCHEDULES:
        raise ConfigError(f"unknown optimizer.schedule {spec.get('schedule')!r}; valid schedules: "
                          f"{', '.join(loop.SCHEDULES)}")
    return spec


def run_settings(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The task's name and :func:`benchmarks.config.settings` (steps, batch, optimizer), checked."""
    task_name = choice("task", cfg)
    try:
        s = settings(cfg, task_name)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (an interpolation that does not resolve, ...)
        raise ConfigError(f"the config does not resolve: {e}") from None
    require_int("batch_size", s["batch_size"])
    require_optimizer(s["optimizer"])
    return task_name, s


def log(cfg: DictConfig, msg: str) -> None:
    """Progress lines (``progress=false`` silences them)."""
    if cfg.get("progress", True):
        print(msg, file=sys.stderr, flush=True)


def say(msg: str) -> None:
    """The result's summary lines (always printed, to stderr)."""
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- timer
def sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device, warmup: int, repeats: int, min_repeats: int | None = None,
            max_seconds: float | None = None) -> dict[str, Any]:
    """The first call (timed alone: ``first_call_ms``, it includes compilation and set-up), then
    ``warmup - 1`` more untimed calls, then up to ``repeats`` timed calls: at least ``min_repeats``
    (default: all), none after ``max_seconds`` of timed calls (default: no limit). Times in ms;
    ``times_ms`` lists every timed call in order."""
    device = torch.device(device)
    min_repeats = repeats if min_repeats is None else min_repeats
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = (time.perf_counter() - t0) * 1e3
    w0 = time.perf_counter()
    for _ in range(max(0, warmup - 1)):
        if max_seconds is not None and time.perf_counter() - w0 > max_seconds / 2:
            break  # slow cells: enough warm-up
        fn()
    sync(device)
    times: list[float] = []
    spent = 0.0
    for i in range(max(1, repeats)):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            t = a.elapsed_time(b)
        else:
            s = time.perf_counter()
            fn()
            t = (time.perf_counter() - s) * 1e3
        times.append(t)
        spent += t / 1e3
        if max_seconds is not None and ((i + 1 >= min_repeats and spent > max_seconds) or spent > 3 * max_seconds):
            break
    srt = sorted(times)
    q = statistics.quantiles(srt, n=4, method="inclusive") if len(srt) > 1 else [srt[0]] * 3
    return {"time_ms": statistics.median(srt), "time_min_ms": srt[0], "time_p25_ms": q[0], "time_p75_ms": q[2],
            "repeats": len(times), "first_call_ms": first, "times_ms": times,
            "timer": "cuda_events" if device.type == "cuda" else "perf_counter"}


def peak_memory_mb(fn: Callable[[], Any], device) -> float | None:
    """CUDA: peak memory allocated during one call of ``fn``, minus what was allocated before."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def saved_tensor_mb(forward: Callable[[], Any]) -> float:
    """MB of distinct storages ``forward`` saves for backward (activation memory; any device)."""
    seen: dict[int, int] = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        except Exception:  # noqa: BLE001
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values()) / 2**20


def optimizer_summary(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's class and its parameter groups (sizes, lr, weight decay), for records."""
    return {"class": type(opt).__name__,
            "groups": [{"n_tensors": len(g["params"]), "n_params": sum(p.numel() for p in g["params"]),
                        "lr": g["lr"], "weight_decay": g.get("weight_decay", 0.0)} for g in opt.param_groups]}


def time_train_steps(model: torch.nn.Module, task, batch_size: int, optimizer_spec: dict[str, Any], device,
                     dtype: torch.dtype = torch.float32, *, warmup: int = 3, repeats: int = 10,
                     min_repeats: int | None = None, max_seconds: float | None = None, seed: int = 0,
                     autocast: torch.dtype | None = None, memory: bool = False,
                     forward_model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Time ``repeats`` calls of :func:`benchmarks.loop.train_step` after ``warmup`` (see :func:`time_fn`).

    ``model`` is moved to ``device``/``dtype`` and put in train mode; the optimizer is
    ``loop.make_optimizer(model, optimizer_spec)`` (``grad_clip`` from the spec); the batch is
    ``task.train_batch(0, batch_size, Generator(seed))`` moved by ``loop.to_device``. ``autocast``:
    run the steps under ``torch.autocast`` to that dtype. ``forward_model``: what the step calls
    (e.g. ``torch.compile(model)``; default ``model``). ``memory``: also ``peak_mem_mb`` (CUDA) and
    ``saved_mb`` (activations saved by one forward of the objective). The learning-rate schedule is
    not applied (it only rescales the lr). Returns :func:`time_fn`'s fields plus ``params``,
    ``backend``, ``optimizer`` (:func:`optimizer_summary`), ``last_loss``, ``last_aux`` and
    ``not_applied`` (steps whose loss was not finite, which train_step does not apply)."""
    device = torch.device(device)
    model = model.to(device=device, dtype=dtype)
    model.train()
    fwd = forward_model if forward_model is not None else model
    spec = dict(optimizer_spec)
    opt = loop.make_optimizer(model, spec)
    grad_clip = spec.get("grad_clip")
    batch = loop.to_device(task.train_batch(0, int(batch_size), torch.Generator().manual_seed(int(seed))), device, dtype)
    ctx: Callable[[], Any] = ((lambda: torch.autocast(device_type=device.type, dtype=autocast)) if autocast is not None
                              else contextlib.nullcontext)
    results: list[loop.StepResult] = []

    def step():
        with ctx():
            results.append(loop.train_step(fwd, task, batch, opt, grad_clip))

    out = time_fn(step, device, warmup, repeats, min_repeats, max_seconds)
    if memory:
        out["peak_mem_mb"] = peak_memory_mb(step, device)

        def forward():
            with ctx():
                return loop.objective(fwd, task, batch)[2]

        out["saved_mb"] = saved_tensor_mb(forward)
        opt.zero_grad(set_to_none=True)
    out.update(params=models.count_params(model), backend=models.backends(model), optimizer=optimizer_summary(opt),
               last_loss=results[-1].loss, last_aux=results[-1].aux,
               not_applied=sum(not r.applied for r in results))
    return out


# ----------------------------------------------------------------------------------------- Table I
def paper_rows() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(PAPER_FILE.read_text())["table1_ant_models"]


def check(cfg: DictConfig) -> dict[str, Any]:
    """Everything Table I needs, checked before any work (a :class:`ConfigError` names the key)."""
    require_kind(cfg, "timing", "benchmarks.timing")
    names = require_models("models", cfg.get("models"))
    paper = paper_rows()
    rows_of = dict(OmegaConf.to_container(cfg.paper_rows, resolve=True)) if cfg.get("paper_rows") else {}
    bad = {m: r for m, r in rows_of.items() if r not in paper}
    if bad:
        raise ConfigError(f"paper_rows {bad} name no row of table1_ant_models; valid rows: {', '.join(paper)}")
    device, dtype = device_and_dtype(cfg)
    warmup = require_int("timing.warmup", OmegaConf.select(cfg, "timing.warmup"), 0)
    repeats = require_int("timing.repeats", OmegaConf.select(cfg, "timing.repeats"), 1)
    require_int("seed", cfg.get("seed"), 0)
    task_name, s = run_settings(cfg)
    shapes = shapes_of(cfg)
    for k in ("seq_len", "d_in", "d_out"):
        if k in shapes:
            require_int(f"task shape {k}", shapes[k])
    for m in names:
        dry_run(m, shapes, {}, device, dtype)
    return {"models": names, "paper_rows": rows_of, "paper": paper, "device": device, "dtype": dtype,
            "warmup": warmup, "repeats": repeats, "task_name": task_name, "batch_size": int(s["batch_size"]),
            "optimizer": s["optimizer"], "shapes": shapes}


def _model_facts(name: str, model: torch.nn.Module) -> dict[str, Any]:
    mc = models.model_config(name)
    width, depth = mc.get("width"), mc.get("depth")
    hidden = int(round(float(mc.get("mlp_scale", 0)) * int(width))) if mc.get("mlp") not in (None, "none") else 0
    filters = sorted({int(m.k) for m in model.modules() if hasattr(m, "filters") and isinstance(getattr(m, "k", None), int)})
    return {"width": width, "depth": depth, "mlp": mc.get("mlp"), "mlp_scale": mc.get("mlp_scale"), "mlp_hidden": hidden,
            "moe": bool(mc.get("moe")), "num_experts": mc.get("num_experts"), "top_k": mc.get("top_k"),
            "filters": filters, "mixers": mc.get("mixers")}


def _md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    """Markdown through pandas (:mod:`benchmarks.tables`; text left, numbers right)."""
    return tables.markdown(tables.frame(header, rows)).splitlines()


def _tex_table(caption: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """Booktabs LaTeX through pandas (:mod:`benchmarks.tables`: escaped, compiles with pdflatex)."""
    return tables.latex(tables.frame(header, rows), caption, notes, source="python -m benchmarks.timing")


def _rel(path: pathlib.Path, start: pathlib.Path) -> str:
    try:
        return os.path.relpath(pathlib.Path(path).resolve(), pathlib.Path(start).resolve())
    except ValueError:
        return str(path)


def _plot(path: pathlib.Path, labels: list[str], ours: list[float], paper: list[float | None], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2.5, 3.6), dpi=130)
    ax.bar(x - 0.2, ours, 0.4, label="ours (this machine)", color="tab:blue")
    ax.bar(x + 0.2, [p if p is not None else 0.0 for p in paper], 0.4, label="paper (its GPU; reference)",
           color="tab:gray")
    for xi, v in zip(x, ours):
        ax.text(xi - 0.2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_ylabel("ms per train step (median)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Table I: time the train step of each model of ``cfg.models``; write the table and records."""
    t_start = time.perf_counter()
    c = check(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(require_int("threads", cfg.threads))
    profile, exp = str(cfg.profile.name), str(cfg.experiment_name)
    out = pathlib.Path(cfg.paths.results) / exp / profile
    plots = pathlib.Path(cfg.paths.plots) / exp / profile
    device, dtype, shapes, bs = c["device"], c["dtype"], c["shapes"], c["batch_size"]
    task = RandomTask(**shapes)
    seed = int(cfg.seed)
    per_model: dict[str, Any] = {}
    raw: dict[str, list[float]] = {}
    for name in c["models"]:
        torch.manual_seed(seed)
        model = models.build_model(name, **shapes)
        facts = _model_facts(name, model)
        r = time_train_steps(model, task, bs, c["optimizer"], device, dtype, warmup=c["warmup"], repeats=c["repeats"],
                             seed=seed)
        raw[name] = [round(t, 4) for t in r.pop("times_ms")]
        per_model[name] = {**facts, **{k: r[k] for k in ("time_ms", "time_min_ms", "time_p25_ms", "time_p75_ms",
                                                            "repeats", "first_call_ms", "timer", "params", "backend",
                                                            "optimizer", "last_loss", "last_aux", "not_applied")}}
        log(cfg, f"[table1] {name}: {r['time_ms']:.2f} ms/step (median of {r['repeats']}), {r['params']:,} params, "
                 f"{r['backend']}")
        del model

    info = device_info(device)
    dname = info.get("gpu") or f"{info.get('cpu')} (torch threads: {info.get('torch_threads')})"
    commit = git_commit()
    header = ["Model", "Params (ours)", "Params (paper)", "Width/Depth (ours)", "Width/Depth (paper)",
              "MLP scale (paper)", "MLP (ours)", "Filters (ours)", "Filters (paper)", "MoE (ours)", "MoE (paper)",
              "Time/train step (ours, this machine)", "Time/train step (paper, its GPU; reference)"]
    rows, labels, ours, theirs = [], [], [], []
    for name in c["models"]:
        m = per_model[name]
        prow_name = c["paper_rows"].get(name)
        p = c["paper"].get(prow_name) if prow_name else None
        label = prow_name or name
        moe = f"MoE {m['num_experts']} experts, top-{m['top_k']}" if m["moe"] else "no"
        mlp = (f"{'SwiGLU' if m['mlp'] == 'swiglu' else m['mlp']} {m['mlp_hidden']} ({float(m['mlp_scale']):g} x width)"
               if m["mlp_hidden"] else "none")
        rows.append([label, f"{m['params'] / 1e6:.3f}M ({m['params']:,})", f"{p['params_m']:.2f}M" if p else "-",
                     f"{m['width']}/{m['depth']}", f"{p['width']}/{p['depth']}" if p else "-",
                     f"{p['mlp_scale']}" if p else "-", mlp, ",".join(map(str, m["filters"])) or "-",
                     f"{p['filters'] or '-'}" if p else "-", moe, ("yes" if p["moe"] else "no") if p else "-",
                     f"{m['time_ms']:.1f} ms", f"{p['ms_per_step']} ms" if p else "-"])
        labels.append(label)
        ours.append(m["time_ms"])
        theirs.append(float(p["ms_per_step"]) if p else None)
    opt = c["optimizer"]
    groups = next(iter(per_model.values()))["optimizer"]["groups"] if per_model else []
    wds = sorted({g["weight_decay"] for g in groups})
    timer = "CUDA events after torch.cuda.synchronize" if device.type == "cuda" else "time.perf_counter"
    rel_timing = "timing.json"
    notes = [
        f"- Profile **{profile}**; measured by `python -m benchmarks.timing experiment={exp} profile={profile}` on "
        f"**{dname}** (device `{device}`), commit {commit}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
        f"- Time per train step: median of {c['repeats']} steps after {c['warmup']} warm-up steps ({timer}) of "
        f"`benchmarks.loop.train_step`, the step of the runs (forward, task loss + MoE auxiliary loss, backward, "
        f"optimizer step); batch {bs} x window {shapes.get('seq_len')} x {shapes.get('d_in')} input features, "
        f"{shapes.get('d_out')} outputs, {str(cfg.dtype)}, one fixed random batch on the device (no data loading).",
        f"- Optimizer: the runs' (`{c['task_name']}` task default merged with `optimizer.*`): {opt['name']} lr "
        f"{opt['lr']}, weight decay {opt.get('weight_decay') or 0} on matrices and 0 on 1-D weights "
        f"(parameter groups of `models.param_groups`; weight decays used: {wds}).",
        "- The paper's times come from its own GPU and sizes: a reference, not a target for this machine. Params "
        "(ours): `conf/model/robotics_*.yaml` built for these shapes; MLP scale s is read as a SwiGLU hidden size of "
        "s x width / 4 (README, section Robotics). Paper columns: `benchmarks/paper_tables.yaml` (`table1_ant_models`).",
        f"- Every timed step: `{rel_timing}`; config, versions and device: `record.json`.",
    ]
    png = plots / f"{exp}.png"
    md = ["# Table I: model specifications for the Ant-v1 task", ""] + notes + [""] + _md_table(header, rows) + [
        "", f"![ms per train step]({_rel(png, out)})", ""]
    _plot(png, labels, ours, theirs, f"Table I: time per train step, batch {bs} x window {shapes.get('seq_len')} "
                                    f"({profile} profile; {dname[:40]})")
    atomic_write_text(out / "table.md", "\n".join(md).rstrip() + "\n")
    atomic_write_text(out / "table.tex", _tex_table(f"Table I: model specifications for Ant-v1 ({profile} profile)",
                                                    header, rows, notes[:4]))
    atomic_write_json(out / "timing.json", {"unit": "ms", "timer": timer, "warmup": c["warmup"], "device": str(device),
                                            "batch_size": bs, "shapes": shapes, "steps_ms": raw})
    record = {"experiment": exp, "kind": "timing", "profile": profile, "config": OmegaConf.to_container(cfg, resolve=True),
              "optimizer": opt, "batch_size": bs, "shapes": shapes, "dtype": str(cfg.dtype), "models": per_model,
              "summary": {name: {"ms_per_step": per_model[name]["time_ms"], "params": per_model[name]["params"]}
                          for name in c["models"]},
              "git_commit": commit, "versions": package_versions(), "device": info,
              "backends": {name: per_model[name]["backend"] for name in c["models"]},
              "files": {"table_md": str(out / "table.md"), "table_tex": str(out / "table.tex"),
                        "timing": str(out / "timing.json"), "plot": str(png)},
              "wall_time_s": round(time.perf_counter() - t_start, 2)}
    record["git_diff"] = save_diff(out, record["git_commit"])
    atomic_write_json(out / "record.json", record)
    say("\n".join(md[:1] + md[len(notes) + 3:]).rstrip())
    say(f"wrote {out} and {png} in {record['wall_time_s']:.0f} s")
    return record


main = hydra_entry(run)


if __name__ == "__main__":
    from benchmarks.timing import main as _main

    _main()
