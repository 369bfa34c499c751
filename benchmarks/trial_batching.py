"""Batched trials vs one by one: seconds per trial-step of each model at the sizes of Figures 2 and 4.

    make bench-trials [PROFILE=paper]      (= python -m benchmarks.reproduce experiment=trial_batching)

For each setting (an experiment of the suite and its number of trials) and each model, the runs'
own configs are composed (``experiment=<E> model=<m> profile=<P>``: width, depth, task, batch,
optimizer exactly as the runs), N trials are built the way the runner builds them, and the two
training loops of the runner are timed on the same batches:

* one by one: ``benchmarks.loop.train_step`` for trial 1, then trial 2, ... (``s`` steps each);
* batched: ``benchmarks.trials.batched_step`` on the N trials at once (``s`` steps).

Data making is outside the timed region in both (it is the same work). Reported: milliseconds per
trial-step (the time to advance one trial by one step), the speedup (one by one / batched), and what
that means for the experiment (``steps x trials`` of each model). Written to
``<results>/trial_batching/<profile>/`` (table.md, results.json, record.json) and a plot.
"""
from __future__ import annotations

import pathlib
import sys
import time
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import models
from benchmarks import trials
from benchmarks.config import ConfigError, choice, compose, hydra_entry, require_int, settings, without_hydra
from benchmarks.loop import make_optimizer, resolve_device, resolve_dtype, to_device, train_step
from benchmarks.records import atomic_write_json, atomic_write_text, device_info, git_commit, package_versions, save_diff


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check(cfg: DictConfig) -> dict[str, Any]:
    spec = OmegaConf.to_container(cfg.trial_batching, resolve=True)
    require_int("trial_batching.steps", spec.get("steps"))
    require_int("trial_batching.warmup", spec.get("warmup"), 0)
    names = spec.get("models") or []
    unknown = sorted(set(names) - set(models.available_models()))
    if unknown or not names:
        raise ConfigError(f"trial_batching.models: unknown {unknown or 'empty list'}; valid models: "
                          f"{', '.join(models.available_models())}")
    settings_ = spec.get("settings") or {}
    if not settings_:
        raise ConfigError("trial_batching.settings is empty")
    for label, s in settings_.items():
        if not (pathlib.Path(__file__).resolve().parent.parent / "conf" / "experiment" / f"{s.get('experiment')}.yaml").exists():
            raise ConfigError(f"trial_batching.settings.{label}.experiment: no conf/experiment/{s.get('experiment')}.yaml")
        require_int(f"trial_batching.settings.{label}.trials", s.get("trials"), 2)
    return spec


def _composed(exp: str, model: str, profile: str) -> tuple[DictConfig, str]:
    """The runs' config of ``model`` in experiment ``exp`` and its task name."""
    cfg = compose([f"experiment={exp}", f"model={model}", f"profile={profile}"], return_hydra_config=True)
    return without_hydra(cfg), choice("task", cfg)


def _trials(exp: str, model: str, profile: str, n: int, device, dtype):
    """N trials of ``model`` in experiment ``exp``, built by the runner's own :func:`benchmarks.train.build_run`."""
    from benchmarks.train import build_run

    cfg, task_name = _composed(exp, model, profile)
    built = [build_run(trials.with_seed(cfg, seed), model, device, dtype) for seed in range(n)]
    return [b[0] for b in built], [b[1] for b in built], settings(cfg, task_name)


def measure(exp: str, model: str, profile: str, n: int, steps: int, warmup: int, device, dtype) -> dict[str, Any]:
    tasks_, mods, s = _trials(exp, model, profile, n, device, dtype)
    bs, spec = int(s["batch_size"]), s["optimizer"]
    clip = spec.get("grad_clip")
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    batches = [[to_device(t.train_batch(k, bs, g), device, dtype) for t, g in zip(tasks_, gens)]
               for k in range(warmup + steps)]
    def sync():  # a CUDA step is timed to its end, not to its launch
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    # one by one
    opts = [make_optimizer(m, spec) for m in mods]
    one = 0.0
    for i in range(n):
        for k in range(warmup + steps):
            sync()
            t = time.perf_counter()
            train_step(mods[i], tasks_[i], batches[k][i], opts[i], clip)
            sync()
            if k >= warmup:
                one += time.perf_counter() - t
    out = {"model": model, "experiment": exp, "trials": n, "batch_size": bs, "steps_timed": steps,
           "one_by_one_ms_per_trial_step": 1000 * one / (n * steps), "params": models.count_params(mods[0])}
    why = trials.why_not_batchable(mods[0])
    if why:
        return {**out, "batched_ms_per_trial_step": None, "speedup": None, "batched": False, "reason": why}
    stack = trials.TrialStack(mods)
    why = stack.probe(torch.stack([b.inputs for b in batches[0]]))  # what vmap refuses here, as the runner checks
    if why:
        return {**out, "batched_ms_per_trial_step": None, "speedup": None, "batched": False, "reason": why}
    opt = stack.optimizer(make_optimizer, spec)
    active = [True] * n
    both = 0.0
    for k in range(warmup + steps):
        sync()
        t = time.perf_counter()
        trials.batched_step(stack, tasks_, batches[k], opt, clip, active)
        sync()
        if k >= warmup:
            both += time.perf_counter() - t
    b = 1000 * both / (n * steps)
    return {**out, "batched_ms_per_trial_step": b, "speedup": out["one_by_one_ms_per_trial_step"] / b,
            "batched": True, "reason": "", "plain_paths": ",".join(stack.plain_paths)}


def run(cfg: DictConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    spec = check(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(require_int("threads", cfg.threads))
    device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
    profile, exp = str(cfg.profile.name), str(cfg.experiment_name)
    out_dir = pathlib.Path(cfg.paths.results) / exp / profile
    plot_dir = pathlib.Path(cfg.paths.plots) / exp / profile
    rows = []
    for label, st in spec["settings"].items():
        for model in spec["models"]:
            r = measure(st["experiment"], model, profile, int(st["trials"]), int(spec["steps"]), int(spec["warmup"]),
                        device, dtype)
            r["setting"] = label
            ecfg, tname = _composed(st["experiment"], model, profile)
            r["run_steps"] = int(settings(ecfg, tname)["steps"])
            rows.append(r)
            sp = f"{r['speedup']:.2f}x" if r["speedup"] else f"not batched ({r['reason']})"
            _say(f"[trial_batching] {label} {model}: one by one {r['one_by_one_ms_per_trial_step']:.2f} ms, "
                 f"batched {r['batched_ms_per_trial_step'] or float('nan'):.2f} ms per trial-step: {sp}")
    info = device_info(device)
    dname = info.get("gpu") or f"{info.get('cpu')} (torch threads: {torch.get_num_threads()})"
    header = "| setting | model | trials | batch | one by one (ms / trial-step) | batched (ms / trial-step) | speedup | one model's trials x steps, one by one | batched |"
    lines = [f"# Batched trials vs one by one ({profile} profile)", "",
             f"Measured by `make bench-trials PROFILE={profile}` on **{dname}**, device `{device}`, commit "
             f"{git_commit()}, {time.strftime('%Y-%m-%d %H:%M %Z')}: {spec['steps']} timed steps after {spec['warmup']} "
             "warm-up steps of the runner's two loops (`benchmarks.loop.train_step` per trial; "
             "`benchmarks.trials.batched_step` for all trials at once), on the same batches, data making "
             "excluded. Sizes, optimizer and batch: the experiment's runs.", "",
             header, "|" + "---|" * 9]
    for r in rows:
        total_one = r["one_by_one_ms_per_trial_step"] * r["trials"] * r["run_steps"] / 60000
        b = r["batched_ms_per_trial_step"]
        batched = f"{b:.2f}" if b else "-"
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "not batched: " + r["reason"]
        total_b = f"{b * r['trials'] * r['run_steps'] / 60000:.1f} min" if b else "-"
        lines.append(f"| {r['setting']} | {r['model']} | {r['trials']} | {r['batch_size']} | "
                     f"{r['one_by_one_ms_per_trial_step']:.2f} | {batched} | {speedup} | {total_one:.1f} min | {total_b} |")
    lines += ["", f"![speedup]({pathlib.Path('..') / '..' / '..' / 'plots' / exp / profile / 'trial_batching.png'})", ""]
    _plot(plot_dir / "trial_batching.png", rows, f"Batched trials vs one by one ({profile}; {dname[:40]})")
    atomic_write_text(out_dir / "table.md", "\n".join(lines))
    atomic_write_json(out_dir / "results.json", {"unit": "ms per trial-step", "rows": rows})
    record = {"experiment": exp, "kind": "trial_batching", "profile": profile,
              "config": OmegaConf.to_container(cfg, resolve=True), "git_commit": git_commit(),
              "versions": package_versions(), "device": info, "dtype": str(cfg.dtype),
              "threads": torch.get_num_threads(), "rows": rows,
              "wall_time_s": round(time.perf_counter() - t_start, 2)}
    record["git_diff"] = save_diff(out_dir, record["git_commit"])
    atomic_write_json(out_dir / "record.json", record)
    _say("\n".join(lines[4:-2]))
    _say(f"wrote {out_dir} in {record['wall_time_s']:.0f} s")
    return record


def _plot(path: pathlib.Path, rows: list[dict[str, Any]], title: str) -> None:
    from benchmarks.report import pyplot, save_figure

    plt = pyplot()

    from benchmarks.report import COLORS, LABELS

    settings_ = list(dict.fromkeys(r["setting"] for r in rows))
    fig, axes = plt.subplots(1, len(settings_), figsize=(5 * len(settings_), 3.6), squeeze=False)
    for ax, st in zip(axes[0], settings_):
        rs = [r for r in rows if r["setting"] == st]
        names = [LABELS.get(r["model"], r["model"]) for r in rs]
        vals = [r["speedup"] or 0.0 for r in rs]
        ax.bar(names, vals, color=[COLORS.get(r["model"], "tab:gray") for r in rs])
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_title(f"{st}: {rs[0]['trials']} trials, batch {rs[0]['batch_size']}")
        ax.set_ylabel("speedup of batching (one by one / batched)")
        ax.tick_params(axis="x", rotation=30)
    save_figure(fig, path, title, dpi=120)


main = hydra_entry(run)

if __name__ == "__main__":
    from benchmarks.trial_batching import main as _main

    _main()
