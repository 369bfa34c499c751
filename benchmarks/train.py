"""The Hydra entry point of every experiment in the suite.

    python -m benchmarks.train model=stu_t task=induction_heads seed=3 profile=smoke
    python -m benchmarks.train -m model=stu,stu_t,s4d task=induction_heads 'seed=range(0,8)'
    python -m benchmarks.train -m experiment=fig2_lds profile=paper hydra/launcher=joblib

One run = one (experiment, model, task, seed [, other overrides]). It writes into its own folder
``<out_root>/<profile>/<experiment>/<task>/<model>[/<overrides>]/seed<seed>/``:

* ``record.json``: config, seed, git commit, package versions, device, backends, parameter count,
  wall time, status (``ok`` | ``diverged``) and final metrics;
* ``curve.csv``: train loss and evaluation metrics every ``eval_every`` steps;
* ``model.pt`` (only with ``save_model=true``): the trained weights with the model config and the
  task shapes, for evaluations after training (``benchmarks/robotics.py``).

Both are written atomically. A run whose record exists is skipped, so a killed sweep resumes
where it stopped; with ``checkpoint_every`` a run itself resumes from its last checkpoint.
A NaN or diverging loss ends that run with a record that says so; the sweep goes on.
"""
from __future__ import annotations

import math
import pathlib
import re
import sys
import time
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import models
from benchmarks.records import (atomic_write_csv, atomic_write_json, device_info, git_commit, package_versions,
                                short_hash)

# Overrides that do not change what a run computes (or are already in its folder name).
_NOT_IN_TAG = {"model", "task", "seed", "profile", "experiment", "experiment_name", "out_root", "progress",
               "force", "device", "threads", "checkpoint_every", "save_model"}


def _choice(group: str, cfg: DictConfig) -> str:
    try:
        return HydraConfig.get().runtime.choices[group]
    except (ValueError, KeyError):
        return str(cfg.get(f"{group}_name", group))


def _tag() -> str:
    """Folder tag from the command-line overrides that change the run (e.g. model.width=64)."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:
        return ""
    parts = []
    for o in sorted(overrides):
        key = o.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in _NOT_IN_TAG or key.startswith("hydra"):
            continue
        parts.append(re.sub(r"[^A-Za-z0-9_.=,-]", "", o).replace("=", "-"))
    if not parts:
        return ""
    tag = "_".join(parts)
    return tag if len(tag) <= 80 else tag[:70] + "-" + short_hash(parts)


def run_dir(cfg: DictConfig, model_name: str, task_name: str) -> pathlib.Path:
    d = pathlib.Path(cfg.out_root) / cfg.profile.name / cfg.experiment_name / task_name / model_name
    tag = _tag()
    if tag:
        d = d / tag
    return d / f"seed{cfg.seed}"


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but CUDA is not available; use device=cpu or device=auto")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, spec: dict[str, Any]) -> torch.optim.Optimizer:
    name = spec["name"].lower()
    lr = float(spec["lr"])
    wd = float(spec.get("weight_decay") or 0.0)
    groups = models.param_groups(model, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=wd, momentum=float(spec.get("momentum") or 0.0))
    raise ValueError(f"unknown optimizer {name!r}; valid: adam, adamw, rmsprop, sgd")


def lr_factor(step: int, steps: int, schedule: str, warmup_frac: float) -> float:
    if schedule in (None, "constant"):
        return 1.0
    warm = max(1, int(warmup_frac * steps))
    if step < warm:
        return (step + 1) / warm
    frac = (step - warm) / max(1, steps - warm)
    if schedule == "cosine":
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
    if schedule == "warmup_linear":
        return 1.0 - 0.9 * frac  # linear decay to a tenth (max 3e-4 -> min 3e-5 in section IV)
    raise ValueError(f"unknown schedule {schedule!r}; valid: constant, cosine, warmup_linear")


@torch.no_grad()
def evaluate(model, task, batch_size: int, seed: int, device, dtype) -> dict[str, float]:
    """Task metrics over its evaluation batches, weighted by scored positions."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    weight = 0.0
    for batch in task.eval_batches(batch_size, seed):
        batch = batch.to(device)
        if batch.inputs.is_floating_point():
            batch.inputs = batch.inputs.to(dtype)
            batch.targets = batch.targets.to(dtype)
        out = model(batch.inputs)
        m = task.metrics(out, batch)
        w = float(batch.mask.sum())
        for k, v in m.items():
            totals[k] = totals.get(k, 0.0) + v * w
        weight += w
    model.train(was_training)
    return {k: v / max(weight, 1.0) for k, v in totals.items()}


def _settings(cfg: DictConfig, task, task_name: str) -> dict[str, Any]:
    prof = cfg.profile
    steps = cfg.steps if cfg.steps is not None else (prof.steps.get(task_name) if prof.steps else None)
    steps = int(steps if steps is not None else task.default_steps)
    bs = cfg.batch_size if cfg.batch_size is not None else (prof.batch_size.get(task_name) if prof.batch_size else None)
    bs = int(bs if bs is not None else task.default_batch_size)
    opt = dict(task.default_optimizer)
    opt.update({k: v for k, v in OmegaConf.to_container(cfg.optimizer).items() if v is not None})
    opt.setdefault("schedule", "constant")
    opt.setdefault("warmup_frac", 0.0)
    every = int(cfg.eval_every) if cfg.eval_every else max(1, steps // int(prof.get("curve_points") or 40))
    return {"steps": steps, "batch_size": bs, "optimizer": opt, "eval_every": every}


def config_fingerprint(conf: dict[str, Any], task_name: str) -> str:
    """A hash of everything in a resolved config (``OmegaConf.to_container(cfg, resolve=True)``, as
    stored in every record) that decides a run's numbers: the model, the task, the optimizer, seed,
    dtype, steps, batch, evaluation settings and this task's profile sizes. Not the device,
    threads, progress bars or output folders. A record whose config gives another fingerprint is
    stale (a YAML file or the profile changed since), so it is not reused."""
    import hashlib
    import json

    prof = conf.get("profile") or {}
    keys = {k: conf.get(k) for k in ("model", "task", "optimizer", "seed", "dtype", "steps", "batch_size",
                                     "eval_every", "eval_size", "diverge_loss")}
    if isinstance(keys["task"], dict):  # the task's own progress bars do not change its numbers
        keys["task"] = {k: v for k, v in keys["task"].items() if k != "progress"}
    keys.update({"profile_steps": (prof.get("steps") or {}).get(task_name),
                 "profile_batch_size": (prof.get("batch_size") or {}).get(task_name),
                 "curve_points": prof.get("curve_points")})
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _set_aside(out: pathlib.Path, why: str) -> None:
    """Rename a stale run's files (record, curve, weights, checkpoint) so nothing finished is lost."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("record.json", "curve.csv", "model.pt", "checkpoint.pt"):
        f = out / name
        if f.exists():
            f.replace(out / f"{f.stem}.stale-{stamp}{f.suffix}")
    print(f"[stale] {out}: {why}; its files are kept as *.stale-{stamp}.*, running it again", file=sys.stderr)


def run(cfg: DictConfig, model_name: str | None = None, task_name: str | None = None) -> float:
    """Train one run (or skip it if its record exists); return its primary metric.

    ``model_name``/``task_name`` default to Hydra's choices (give them when calling outside Hydra)."""
    model_name = model_name or _choice("model", cfg)
    task_name = task_name or _choice("task", cfg)
    out = run_dir(cfg, model_name, task_name)
    record_path = out / "record.json"
    fingerprint = config_fingerprint(OmegaConf.to_container(cfg, resolve=True), task_name)
    if record_path.exists() and not cfg.force:
        import json

        rec = json.loads(record_path.read_text())
        if config_fingerprint(rec.get("config") or {}, task_name) == fingerprint:
            print(f"[skip] {out} has a record (status {rec.get('status')}); force=true reruns it", file=sys.stderr)
            return float(rec.get("primary_value", float("nan")))
        _set_aside(out, "its record was made with another config (the model, task, optimizer or profile sizes changed)")

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = _resolve_device(cfg.device)
    dtype = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[cfg.dtype]
    torch.manual_seed(cfg.seed)

    task = instantiate(cfg.task, _convert_="all")
    s = _settings(cfg, task, task_name)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model = models._instantiate(model_cfg, f"model {model_name!r}", **task.model_shapes()).to(device=device, dtype=dtype)
    opt = make_optimizer(model, s["optimizer"])
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(cfg.seed)
    curve: list[dict[str, Any]] = []
    start_step, elapsed = 0, 0.0

    ckpt_path = out / "checkpoint.pt"
    if cfg.checkpoint_every and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck.get("config_fingerprint", fingerprint) != fingerprint:
            _set_aside(out, "its checkpoint was made with another config")
            ck = None
    else:
        ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        curve, start_step, elapsed = ck["curve"], ck["step"], ck["elapsed"]
        print(f"[resume] {out} from step {start_step}", file=sys.stderr)

    status, reason = "ok", ""
    eval_seed = 10**6 + int(cfg.seed)
    t0 = time.perf_counter() - elapsed
    loss_val = float("nan")
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=s["steps"], initial=start_step, desc=f"{model_name}/{task_name}/seed{cfg.seed}",
                   dynamic_ncols=True, file=sys.stderr)
    model.train()
    step = start_step
    try:
        for step in range(start_step, s["steps"]):
            f = lr_factor(step, s["steps"], s["optimizer"]["schedule"], float(s["optimizer"]["warmup_frac"]))
            for g, lr0 in zip(opt.param_groups, base_lrs):
                g["lr"] = lr0 * f
            batch = task.train_batch(step, s["batch_size"], gen).to(device)
            if batch.inputs.is_floating_point():
                batch.inputs, batch.targets = batch.inputs.to(dtype), batch.targets.to(dtype)
            outputs = model(batch.inputs)
            loss = task.loss(outputs, batch)
            aux = model.aux_loss.to(loss.device) if hasattr(model, "aux_loss") else 0.0
            total = loss + aux
            loss_val = float(loss.detach())
            if not math.isfinite(loss_val) or loss_val > cfg.diverge_loss:
                status, reason = "diverged", f"loss {loss_val} at step {step}"
                break
            opt.zero_grad(set_to_none=True)
            total.backward()
            if s["optimizer"].get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(s["optimizer"]["grad_clip"]))
            opt.step()
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss_val:.4g}")
            if step % s["eval_every"] == 0 or step == s["steps"] - 1:
                m = evaluate(model, task, cfg.eval_size, eval_seed, device, dtype)
                curve.append({"step": step + 1, "train_loss": loss_val, **{f"eval_{k}": v for k, v in m.items()},
                              "wall_time_s": round(time.perf_counter() - t0, 3)})
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < s["steps"]:
                out.mkdir(parents=True, exist_ok=True)
                tmp = ckpt_path.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "generator": gen.get_state(), "curve": curve, "step": step + 1,
                            "elapsed": time.perf_counter() - t0, "config_fingerprint": fingerprint}, tmp)
                tmp.replace(ckpt_path)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0

    final = evaluate(model, task, cfg.eval_size, eval_seed, device, dtype) if status == "ok" else {}
    primary = task.primary_metric
    primary_value = final.get(primary, final.get(f"eval_{primary}", float("nan")))
    if status != "ok":
        primary_value = float("nan")
    record = {
        "experiment": cfg.experiment_name,
        "model": model_name,
        "task": task_name,
        "seed": int(cfg.seed),
        "profile": cfg.profile.name,
        "status": status,
        "status_reason": reason,
        "steps_done": step + 1 if status == "ok" else step,
        "settings": s,
        "final_metrics": final,
        "primary_metric": primary,
        "higher_is_better": task.higher_is_better,
        "primary_value": primary_value,
        "params": models.count_params(model),
        "backends": models.backends(model),
        "wall_time_s": round(wall, 3),
        "s_per_step": round(wall / max(1, step + 1 - start_step), 6),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "device": device_info(device),
        "dtype": cfg.dtype,
        "task_info": task.describe(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "config_fingerprint": fingerprint,
        "run_dir": str(out),
    }
    atomic_write_csv(out / "curve.csv", curve)
    if cfg.get("save_model") and status == "ok":
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "model.pt.tmp"
        torch.save({"state_dict": model.state_dict(), "model_config": model_cfg, "shapes": task.model_shapes(),
                    "model": model_name, "task": task_name, "seed": int(cfg.seed)}, tmp)
        tmp.replace(out / "model.pt")
        record["model_file"] = "model.pt"
    atomic_write_json(record_path, record)  # the record last: its existence means "finished"
    if ckpt_path.exists():
        ckpt_path.unlink()
    msg = f"[{status}] {out}: {primary}={primary_value:.4g} params={record['params']} wall={wall:.1f}s"
    print(msg + (f" ({reason})" if reason else ""), file=sys.stderr)
    return float(primary_value)


CONF_DIR = str(pathlib.Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    return run(cfg)


if __name__ == "__main__":
    # Call the function through its importable module, not __main__, so that process-based
    # launchers (joblib, submitit) can pickle it by reference.
    from benchmarks.train import main as _main

    _main()
