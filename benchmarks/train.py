"""The Hydra entry point of every training run and sweep in the suite.

    python -m benchmarks.train model=stu_t task=induction_heads seed=3 profile=smoke
    python -m benchmarks.train -m model=stu,stu_t,s4d task=induction_heads 'seed=range(0,8)'
    python -m benchmarks.train -m experiment=fig2_lds profile=paper hydra/launcher=joblib

One run = one resolved config. Before any work and before any file is touched the config is
checked (:func:`benchmarks.config.validate`; for a sweep, every job of it, by the
:class:`CheckSweep` callback). The run then lives in a folder keyed by its fingerprint
(:mod:`benchmarks.runs`), claimed with a lock while it trains, and trains with THE train step
(:mod:`benchmarks.loop`). It writes:

* ``record.json``: config, spec, fingerprints, seed, git commit, package versions, device,
  backends, parameter count, wall time, time per step, status (``ok`` | ``diverged``), final metrics;
* ``curve.csv``: train loss and evaluation metrics every ``eval_every`` steps;
* ``model.pt`` (``save_model=true``): the trained weights with the model config and task shapes.

All are written atomically; the record comes last, so its presence means "finished". A finished
run is skipped; ``force=true`` trains it again and keeps the old files under set-aside names. With
``checkpoint_every`` a run resumes from its last checkpoint. A non-finite loss at any step, a loss
above ``diverge_loss``, or non-finite final metrics end the run as ``diverged``; the sweep goes on.
"""
from __future__ import annotations

import math
import pathlib
import sys
import time
from typing import Any

import hydra
import torch
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import models
from benchmarks import runs
from benchmarks.config import CONF_DIR, ConfigError, check_jobs, choice, identity, sweep_params, validate
from benchmarks.loop import Schedule, evaluate, make_optimizer, resolve_device, resolve_dtype, to_device, train_step
from benchmarks.records import atomic_write_csv, atomic_write_json, device_info, git_commit, package_versions

RUN_FILES = ("record.json", "curve.csv", "model.pt", "checkpoint.pt")


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cfg: DictConfig, model_name: str | None = None, task_name: str | None = None,
        overrides: list[str] | None = None) -> float:
    """Train one run, or skip it if it is finished (or being trained by another process); return
    its primary metric (NaN when diverged or skipped as busy)."""
    model_name = model_name or choice("model", cfg)
    task_name = task_name or choice("task", cfg)
    overrides = _overrides() if overrides is None else overrides
    if isinstance(cfg.get("threads"), int) and cfg.threads >= 1:
        torch.set_num_threads(int(cfg.threads))  # before anything of the run computes (the dry run included)
    try:
        validate(cfg, task_name)
        ident = identity(cfg, model_name, task_name, overrides)
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    out: pathlib.Path = ident["dir"]
    try:
        with runs.Claim(out):
            runs.clean_temporaries(out)
            done = _finished(out, ident, cfg)
            if done is not None:
                return done
            return _train(cfg, model_name, task_name, ident, overrides)
    except runs.Busy as e:
        _log(f"[busy] {e}; skipping it here")
        return float("nan")


def _finished(out: pathlib.Path, ident: dict[str, Any], cfg: DictConfig) -> float | None:
    """The primary value of a finished run in ``out`` (then it is not trained again), else None.
    Records that cannot be reused are set aside under unique names, never deleted."""
    rec_path = out / "record.json"
    if not rec_path.exists():
        return None
    try:
        rec = runs.load_record(rec_path)
    except runs.CorruptRecord as e:
        kept = runs.set_aside(rec_path, "corrupt")
        _log(f"[corrupt] {e}; kept as {kept.name}, running it again")
        return None
    why = None
    if cfg.get("force"):
        why = "forced"
    elif rec.get("config_fingerprint") != ident["fingerprint"]:
        why = "other-config"
    elif cfg.get("save_model") and rec.get("status") == "ok" and not (out / "model.pt").exists():
        why = "no-weights"
    if why is None:
        _log(f"[skip] {out} is finished (status {rec.get('status')}); force=true trains it again")
        return float(rec.get("primary_value", float("nan")))
    kept = [runs.set_aside(out / f, why).name for f in RUN_FILES if (out / f).exists() and f != "checkpoint.pt"]
    _log(f"[{why}] {out}: earlier files kept as {', '.join(kept)}; training it again")
    return None


def _train(cfg: DictConfig, model_name: str, task_name: str, ident: dict[str, Any], overrides: list[str]) -> float:
    out: pathlib.Path = ident["dir"]
    s = ident["settings"]
    fp = ident["fingerprint"]
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype)
    task = instantiate(cfg.task, _convert_="all")  # may make data: its RNG use never reaches ours
    torch.manual_seed(int(cfg.seed))
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model = models._instantiate(model_cfg, f"model {model_name!r}", **task.model_shapes()).to(device=device, dtype=dtype)
    opt = make_optimizer(model, s["optimizer"])
    sched = Schedule(opt, s["steps"], s["optimizer"])
    grad_clip = s["optimizer"].get("grad_clip")
    gen = torch.Generator().manual_seed(int(cfg.seed))
    curve: list[dict[str, Any]] = []
    start_step, elapsed, step_time = 0, 0.0, 0.0

    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ck = None
        try:
            ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        except Exception as e:  # noqa: BLE001
            kept = runs.set_aside(ckpt_path, "corrupt")
            _log(f"[corrupt] {ckpt_path} ({type(e).__name__}: {e}); kept as {kept.name}, starting over")
        if ck is not None and ck.get("config_fingerprint") != fp:
            kept = runs.set_aside(ckpt_path, "other-config")
            _log(f"[other-config] {ckpt_path} was made with another config; kept as {kept.name}")
            ck = None
        if ck is not None:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            gen.set_state(ck["generator"])
            curve, start_step, elapsed = ck["curve"], ck["step"], ck["elapsed"]
            step_time = ck.get("step_time", 0.0)
            _log(f"[resume] {out} from step {start_step}")

    status, reason = "ok", ""
    eval_seed = 10**6 + int(cfg.seed)
    t0 = time.perf_counter() - elapsed
    loss_val = float("nan")
    steps = int(s["steps"])
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start_step, desc=f"{model_name}/{task_name}/seed{cfg.seed}",
                   dynamic_ncols=True, file=sys.stderr)
    model.train()
    steps_done = start_step
    try:
        for step in range(start_step, steps):
            sched.set(step)
            batch = to_device(task.train_batch(step, s["batch_size"], gen), device, dtype)
            ts = time.perf_counter()
            r = train_step(model, task, batch, opt, grad_clip)
            step_time += time.perf_counter() - ts
            loss_val = r.loss
            if not r.applied:
                status, reason = "diverged", f"non-finite loss {loss_val} (aux {r.aux}) at step {step}"
                break
            steps_done = step + 1
            if loss_val > float(cfg.diverge_loss):
                status, reason = "diverged", f"loss {loss_val} > diverge_loss {cfg.diverge_loss} at step {step}"
                break
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss_val:.4g}")
            if step % s["eval_every"] == 0 or step == steps - 1:
                m = evaluate(model, task, cfg.eval_size, eval_seed, device, dtype)
                curve.append({"step": step + 1, "train_loss": loss_val, **{f"eval_{k}": v for k, v in m.items()},
                              "wall_time_s": round(time.perf_counter() - t0, 3)})
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                runs.atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "generator": gen.get_state(), "curve": curve, "step": step + 1,
                                        "elapsed": time.perf_counter() - t0, "step_time": step_time,
                                        "config_fingerprint": fp}, ckpt_path)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0

    final: dict[str, float] = {}
    if status == "ok":
        final = evaluate(model, task, cfg.eval_size, eval_seed, device, dtype)
        bad = {k: v for k, v in final.items() if not math.isfinite(v)}
        if bad:
            status, reason = "diverged", f"non-finite evaluation metrics {bad} after step {steps_done}"
    primary = task.primary_metric
    primary_value = final.get(primary, float("nan")) if status == "ok" else float("nan")
    record = {
        "experiment": cfg.experiment_name,
        "model": model_name,
        "task": task_name,
        "seed": int(cfg.seed),
        "profile": cfg.profile.name,
        "status": status,
        "status_reason": reason,
        "steps_done": steps_done,
        "settings": s,
        "final_metrics": final,
        "primary_metric": primary,
        "higher_is_better": task.higher_is_better,
        "primary_value": primary_value,
        "params": models.count_params(model),
        "backends": models.backends(model),
        "wall_time_s": round(wall, 3),
        "s_per_step": round(step_time / max(1, steps_done), 6),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "device": device_info(device),
        "dtype": cfg.dtype,
        "task_info": task.describe(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "overrides": list(overrides),
        "spec": ident["spec"],
        "config_fingerprint": fp,
        "setting_fingerprint": ident["setting_fingerprint"],
        "run_dir": str(out),
    }
    atomic_write_csv(out / "curve.csv", curve)
    if cfg.get("save_model") and status == "ok":
        runs.atomic_torch_save({"state_dict": model.state_dict(), "model_config": model_cfg,
                                "shapes": task.model_shapes(), "model": model_name, "task": task_name,
                                "seed": int(cfg.seed), "config_fingerprint": fp}, out / "model.pt")
        record["model_file"] = "model.pt"
    atomic_write_json(out / "record.json", record)  # the record last: its existence means "finished"
    if ckpt_path.exists():
        ckpt_path.unlink()
    msg = f"[{status}] {out}: {primary}={primary_value:.4g} params={record['params']} wall={wall:.1f}s"
    _log(msg + (f" ({reason})" if reason else ""))
    return float(primary_value)


class CheckSweep(Callback):
    """Before a multirun starts: expand its jobs and check every one (config, sizes, names, a dry
    run of the model), so a bad value stops the sweep before its first run trains."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exceptions into warnings: every failure here leaves as SystemExit
        try:
            jobs = check_jobs(sweep_params(config), list(config.hydra.overrides.task))
        except ConfigError as e:
            raise SystemExit(f"error in the sweep: {e}\nnothing was run") from None
        except Exception as e:  # noqa: BLE001
            raise SystemExit(f"error: the sweep cannot be expanded: {type(e).__name__}: {e}\nnothing was run") from None
        seen: dict[str, str] = {}
        for i, j in enumerate(jobs):
            if j["fingerprint"] in seen:
                _log(f"[same run] job {i} ({' '.join(j['overrides'])}) computes the same numbers as "
                     f"({seen[j['fingerprint']]}): it will find that run's record and skip")
            seen.setdefault(j["fingerprint"], " ".join(j["overrides"]))
        _log(f"[sweep] {len(jobs)} job(s) checked, {len(seen)} distinct run(s)")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    return run(cfg)


if __name__ == "__main__":
    # Call the function through its importable module, not __main__, so that process-based
    # launchers (joblib, submitit) can pickle it by reference.
    from benchmarks.train import main as _main

    _main()
