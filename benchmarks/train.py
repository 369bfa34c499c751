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

import contextlib
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
from benchmarks import runs, trackers, trials
from benchmarks.config import CONF_DIR, ConfigError, check_jobs, choice, identity, sweep_params, validate
from benchmarks.loop import Schedule, evaluate, make_optimizer, resolve_device, resolve_dtype, to_device, train_step
from benchmarks.records import atomic_write_csv, atomic_write_json, device_info, git_commit, package_versions, save_diff

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
    """Train one run (``trial_batch=N``: the N seeds from ``seed``, see :mod:`benchmarks.trials`),
    skipping finished ones and those another process is training; return the mean primary metric
    of the trials (NaN when none has a finite one)."""
    model_name = model_name or choice("model", cfg)
    task_name = task_name or choice("task", cfg)
    overrides = _overrides() if overrides is None else overrides
    if isinstance(cfg.get("threads"), int) and cfg.threads >= 1:
        torch.set_num_threads(int(cfg.threads))  # before anything of the run computes (the dry run included)
    try:
        validate(cfg, task_name)
        seeds = trials.trial_seeds(cfg)
        members = []
        for seed in seeds:
            c = cfg if seed == int(cfg.seed) else trials.with_seed(cfg, seed)
            ov = trials.seed_overrides(overrides, seed) if len(seeds) > 1 else overrides
            members.append(Member(c, identity(c, model_name, task_name, ov), ov))
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    if len(seeds) > 1:
        _log(f"[trials] {model_name}/{task_name}: seeds {seeds[0]}-{seeds[-1]} in one run (trial_batch={cfg.trial_batch})")
    values: list[float] = []
    with contextlib.ExitStack() as claims:
        todo: list[Member] = []
        for m in members:
            out = m.ident["dir"]
            try:
                claims.enter_context(runs.Claim(out))
            except runs.Busy as e:
                _log(f"[busy] {e}; skipping it here")
                continue
            runs.clean_temporaries(out)
            done = _finished(out, m.ident, m.cfg)
            if done is not None:
                values.append(done)
            else:
                todo.append(m)
        values += _train_members(cfg, model_name, task_name, todo, seeds)
    finite = [v for v in values if math.isfinite(v)]
    return float(sum(finite) / len(finite)) if finite else float("nan")


class Member:
    """One trial of a run: its config (seed set), identity and overrides."""

    def __init__(self, cfg: DictConfig, ident: dict[str, Any], overrides: list[str]):
        self.cfg, self.ident, self.overrides = cfg, ident, overrides
        self.seed = int(cfg.seed)


def _train_members(cfg: DictConfig, model_name: str, task_name: str, todo: list[Member], seeds: list[int]) -> list[float]:
    """Train the unfinished trials: batched when asked for and possible, else one by one."""
    if not todo:
        return []
    device = resolve_device(cfg.device)
    reason = ""
    early = todo[0].ident["settings"].get("early_stopping")
    if len(todo) > 1 and early and trials.wants_batching(cfg, device):
        reason = "early stopping ends each trial at its own step"
        _log(f"[trials] {model_name}: trained one by one ({reason})")
    elif len(todo) > 1 and trials.wants_batching(cfg, device):
        got = _train_batched(cfg, model_name, task_name, todo, seeds)
        if isinstance(got, list):
            return got
        reason = got
        _log(f"[trials] {model_name}: trained one by one ({reason})")
    elif len(todo) > 1:
        reason = f"batch_trials={trials.batch_trials_setting(cfg.get('batch_trials', 'auto'))} on {device.type}"
    info = trials.describe("one-by-one", seeds, reason)
    return [_train(m.cfg, model_name, task_name, m.ident, m.overrides, info) for m in todo]


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
    elif cfg.get("save_model") and rec.get("status") == "ok" and not (out / "model.pt").exists() \
            and not (out / "restored.json").exists():  # restored runs bring their evaluation, not their weights
        why = "no-weights"
    if why is None:
        _log(f"[skip] {out} is finished (status {rec.get('status')}); force=true trains it again")
        return float(rec.get("primary_value", float("nan")))
    kept = [runs.set_aside(out / f, why).name for f in RUN_FILES if (out / f).exists() and f != "checkpoint.pt"]
    _log(f"[{why}] {out}: earlier files kept as {', '.join(kept)}; training it again")
    return None


def build_run(cfg: DictConfig, model_name: str, device, dtype):
    """The trial's task and its freshly initialised model (``torch.manual_seed(seed)`` first)."""
    task = instantiate(cfg.task, _convert_="all")  # may make data: its RNG use never reaches ours
    torch.manual_seed(int(cfg.seed))
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model = models._instantiate(model_cfg, f"model {model_name!r}", **task.model_shapes()).to(device=device, dtype=dtype)
    return task, model, model_cfg


def _load_checkpoint(out: pathlib.Path, fp: str, device) -> dict[str, Any] | None:
    """The run's checkpoint if it is readable and of this config; else None (bad ones set aside)."""
    ckpt_path = out / "checkpoint.pt"
    if not ckpt_path.exists():
        return None
    try:
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
    except Exception as e:  # noqa: BLE001
        kept = runs.set_aside(ckpt_path, "corrupt")
        _log(f"[corrupt] {ckpt_path} ({type(e).__name__}: {e}); kept as {kept.name}, starting over")
        return None
    if ck.get("config_fingerprint") != fp:
        kept = runs.set_aside(ckpt_path, "other-config")
        _log(f"[other-config] {ckpt_path} was made with another config; kept as {kept.name}")
        return None
    return ck


def _checkpoint(out: pathlib.Path, model, opt_state: dict, gen: torch.Generator, curve, step: int,
                elapsed: float, step_time: float, fp: str, early: dict | None = None) -> None:
    runs.atomic_torch_save({"model": model.state_dict(), "optimizer": opt_state, "generator": gen.get_state(),
                            "curve": curve, "step": step, "elapsed": elapsed, "step_time": step_time,
                            "config_fingerprint": fp, **({"early_stopping": early} if early else {})},
                           out / "checkpoint.pt")


class EarlyStopping:
    """The authors' early stopping (``regime.settings.early_stopping``): after each evaluation, a
    lower validation value (the task's primary metric, lower is better) is the new best (its weights
    kept), else one more evaluation without improvement; ``patience`` of those in a row end the run.
    With ``restore_best`` the run ends with the best weights, so its final metrics are the best's."""

    def __init__(self, spec: dict[str, Any], metric: str, higher_is_better: bool):
        self.patience, self.restore_best = int(spec["patience"]), bool(spec.get("restore_best", True))
        self.metric, self.sign = metric, (-1.0 if higher_is_better else 1.0)
        self.best, self.best_step, self.bad, self.best_state, self.stopped_at = math.inf, None, 0, None, None

    def update(self, value: float, step: int, model) -> bool:
        """Record an evaluation at ``step`` (1-based); True when training should stop."""
        v = self.sign * float(value)
        if v < self.best:
            self.best, self.best_step, self.bad = v, step, 0
            self.best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        else:
            self.bad += 1
        if self.bad >= self.patience:
            self.stopped_at = step
            return True
        return False

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad, "best_state": self.best_state,
                "stopped_at": self.stopped_at}

    def load(self, st: dict[str, Any]) -> None:
        self.best, self.best_step, self.bad = st["best"], st["best_step"], st["bad"]
        self.best_state, self.stopped_at = st["best_state"], st.get("stopped_at")

    def summary(self) -> dict[str, Any]:
        return {"patience": self.patience, "restore_best": self.restore_best, "metric": self.metric,
                "best_step": self.best_step, "best_value": self.sign * self.best if self.best_step else None,
                "stopped_early_at_step": self.stopped_at, "evaluations_without_improvement": self.bad}


def _bar(cfg: DictConfig, total: int, initial: int, desc: str):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr)


def _train(cfg: DictConfig, model_name: str, task_name: str, ident: dict[str, Any], overrides: list[str],
           trial_info: dict[str, Any] | None = None) -> float:
    out: pathlib.Path = ident["dir"]
    s = ident["settings"]
    fp = ident["fingerprint"]
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype)
    task, model, model_cfg = build_run(cfg, model_name, device, dtype)
    opt = make_optimizer(model, s["optimizer"])
    sched = Schedule(opt, s["steps"], s["optimizer"])
    grad_clip = s["optimizer"].get("grad_clip")
    gen = torch.Generator().manual_seed(int(cfg.seed))
    curve: list[dict[str, Any]] = []
    start_step, elapsed, step_time = 0, 0.0, 0.0
    ck = _load_checkpoint(out, fp, device)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        curve, start_step, elapsed = ck["curve"], ck["step"], ck["elapsed"]
        step_time = ck.get("step_time", 0.0)
        _log(f"[resume] {out} from step {start_step}")
    early = EarlyStopping(s["early_stopping"], task.primary_metric, task.higher_is_better) \
        if s.get("early_stopping") else None
    if early is not None and ck is not None and ck.get("early_stopping"):
        early.load(ck["early_stopping"])

    status, reason = "ok", ""
    eval_seed = 10**6 + int(cfg.seed)
    tracker = trackers.make(cfg, ident, model_name, task_name)
    for point in curve:  # a resumed run's earlier points
        tracker.log(point)
    t0 = time.perf_counter() - elapsed
    steps = int(s["steps"])
    bar = _bar(cfg, steps, start_step, f"{model_name}/{task_name}/seed{cfg.seed}")
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
                tracker.log(curve[-1])
                if early is not None and early.update(m[task.primary_metric], step + 1, model):
                    _log(f"[early stop] {out}: no better {task.primary_metric} in {early.patience} evaluations; "
                         f"stopped at step {step + 1}, best at step {early.best_step}")
                    break
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                _checkpoint(out, model, opt.state_dict(), gen, curve, step + 1, time.perf_counter() - t0, step_time, fp,
                            early.state() if early is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if early is not None and status == "ok" and early.restore_best and early.best_state is not None:
        model.load_state_dict(early.best_state)
    wall = time.perf_counter() - t0
    info = trial_info or trials.describe("one-by-one", [int(cfg.seed)])
    return _finish(cfg, model_name, task_name, ident, overrides, task, model, model_cfg, status, reason,
                   steps_done, curve, wall, step_time / max(1, steps_done), info, tracker,
                   early.summary() if early is not None else None)


def _finish(cfg: DictConfig, model_name: str, task_name: str, ident: dict[str, Any], overrides: list[str],
            task, model, model_cfg: dict, status: str, reason: str, steps_done: int, curve: list[dict],
            wall: float, s_per_step: float, trial_info: dict[str, Any],
            tracker: trackers.Tracker | None = None, early_stopping: dict[str, Any] | None = None) -> float:
    """Final evaluation, record, curve and weights of one trained run; its primary value."""
    out: pathlib.Path = ident["dir"]
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype)
    eval_seed = 10**6 + int(cfg.seed)
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
        "settings": ident["settings"],
        "final_metrics": final,
        "primary_metric": primary,
        "higher_is_better": task.higher_is_better,
        "primary_value": primary_value,
        "params": models.count_params(model),
        "backends": models.backends(model),
        "wall_time_s": round(wall, 3),
        "s_per_step": round(s_per_step, 6),
        "trials": trial_info,
        **({"early_stopping": early_stopping} if early_stopping is not None else {}),
        "regime": OmegaConf.select(cfg, "regime.name") if getattr(task, "uses_regime", False) else None,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "device": device_info(device),
        "dtype": cfg.dtype,
        "task_info": task.describe(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "overrides": list(overrides),
        "spec": ident["spec"],
        "config_fingerprint": ident["fingerprint"],
        "setting_fingerprint": ident["setting_fingerprint"],
        "run_dir": str(out),
    }
    record["git_diff"] = save_diff(out, record["git_commit"])
    atomic_write_csv(out / "curve.csv", curve)
    if cfg.get("save_model") and status == "ok":
        runs.atomic_torch_save({"state_dict": model.state_dict(), "model_config": model_cfg,
                                "shapes": task.model_shapes(), "model": model_name, "task": task_name,
                                "seed": int(cfg.seed), "config_fingerprint": ident["fingerprint"]}, out / "model.pt")
        record["model_file"] = "model.pt"
    atomic_write_json(out / "record.json", record)  # the record last: its existence means "finished"
    if tracker is not None:
        tracker.finish(final, status)
    if (out / "checkpoint.pt").exists():
        (out / "checkpoint.pt").unlink()
    msg = f"[{status}] {out}: {primary}={primary_value:.4g} params={record['params']} wall={wall:.1f}s"
    _log(msg + (f" ({reason})" if reason else ""))
    if status == "ok" and record.get("model_file") and cfg.get("evaluate", True) \
            and OmegaConf.select(cfg, "report.kind") == "robotics":
        _evaluate_now(cfg, record, task, device)
    return float(primary_value)


def _evaluate_now(cfg: DictConfig, record: dict[str, Any], task, device) -> None:
    """The prediction evaluation of a robotics run right after it trains, in its own worker
    (:func:`benchmarks.evaluation.evaluate_run`, saved beside the run): a sweep stopped part-way keeps
    the evaluations of its finished runs, so their weights are not needed again. The sweep's own
    evaluation step then finds them and evaluates only what is missing."""
    from benchmarks import evaluation

    ev = OmegaConf.to_container(cfg.profile.robotics_eval, resolve=True)
    try:
        evaluation.evaluate_run({**record, "_dir": record["run_dir"]}, int(ev["predictions"]),
                                ev.get("max_trajectories"), str(device), task=task)
    except Exception as e:  # noqa: BLE001  (the run is finished; the sweep's evaluation step tries again)
        _log(f"[eval failed] {record['run_dir']}: {type(e).__name__}: {e} (the run is kept; the sweep's "
             f"evaluation step tries again)")


def _train_batched(cfg: DictConfig, model_name: str, task_name: str, todo: list[Member],
                   seeds: list[int]) -> list[float] | str:
    """Train ``todo`` as one batched computation (:mod:`benchmarks.trials`). Returns their primary
    values, or why they cannot be batched (nothing was trained or written then)."""
    s = todo[0].ident["settings"]
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype)
    built = [build_run(m.cfg, model_name, device, dtype) for m in todo]
    tasks_, mods = [b[0] for b in built], [b[1] for b in built]
    why = trials.why_not_batchable(mods[0])
    if why:
        return why
    n, steps, bs = len(todo), int(s["steps"]), int(s["batch_size"])
    spec = s["optimizer"]
    grad_clip = spec.get("grad_clip")
    gens = [torch.Generator().manual_seed(m.seed) for m in todo]
    trial_opts = [make_optimizer(mod, spec) for mod in mods]
    curves: list[list[dict[str, Any]]] = [[] for _ in todo]
    start, elapsed, step_time = 0, 0.0, 0.0
    cks = [_load_checkpoint(m.ident["dir"], m.ident["fingerprint"], device) for m in todo]
    starts = {ck["step"] if ck else 0 for ck in cks}
    if len(starts) > 1:
        return f"their checkpoints are at different steps {sorted(starts)}"
    for i, ck in enumerate(cks):
        if ck is None:
            continue
        mods[i].load_state_dict(ck["model"])
        trial_opts[i].load_state_dict(ck["optimizer"])
        gens[i].set_state(ck["generator"])
        curves[i] = ck["curve"]
        start, elapsed, step_time = ck["step"], max(elapsed, ck["elapsed"]), max(step_time, ck.get("step_time", 0.0))
    stack = trials.TrialStack(mods)
    probe = tasks_[0].train_batch(0, 2, torch.Generator().manual_seed(0))
    why = stack.probe(torch.stack([to_device(probe, device, dtype).inputs] * n))
    if why:
        return f"vmap cannot batch this model: {why}"
    opt = stack.optimizer(make_optimizer, spec)
    if start:
        stack.load_optimizer_states(opt, trial_opts)
        _log(f"[resume] {model_name}/{task_name} seeds {[m.seed for m in todo]} from step {start}")
    sched = Schedule(opt, steps, spec)

    active = [True] * n
    status, reason, done_steps = ["ok"] * n, [""] * n, [start] * n
    trackers_ = [trackers.make(m.cfg, m.ident, model_name, task_name) for m in todo]
    for tr, c in zip(trackers_, curves):
        for point in c:
            tr.log(point)
    t0 = time.perf_counter() - elapsed
    bar = _bar(cfg, steps, start, f"{model_name}/{task_name}/seeds{todo[0].seed}-{todo[-1].seed}")
    eval_seeds = [10**6 + m.seed for m in todo]
    try:
        for step in range(start, steps):
            if not any(active):
                break
            sched.set(step)
            batches = [to_device(t.train_batch(step, bs, g), device, dtype) for t, g in zip(tasks_, gens)]
            ts = time.perf_counter()
            vals = trials.batched_step(stack, tasks_, batches, opt, grad_clip, active)
            for i in range(n):
                if active[i] and not math.isfinite(vals[i]):
                    active[i], status[i] = False, "diverged"
                    reason[i] = f"non-finite loss {vals[i]} (aux 0.0) at step {step}"
            step_time += time.perf_counter() - ts
            for i in range(n):
                if not active[i]:
                    continue
                done_steps[i] = step + 1
                if vals[i] > float(cfg.diverge_loss):
                    active[i], status[i] = False, "diverged"
                    reason[i] = f"loss {vals[i]} > diverge_loss {cfg.diverge_loss} at step {step}"
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    live = [v for v, a in zip(vals, active) if a]
                    bar.set_postfix(mean_loss=f"{sum(live) / max(1, len(live)):.4g}", live=f"{sum(active)}/{n}")
            if step % s["eval_every"] == 0 or step == steps - 1:
                for i in range(n):
                    if active[i]:
                        m = evaluate(stack.write_back(i), tasks_[i], cfg.eval_size, eval_seeds[i], device, dtype)
                        curves[i].append({"step": step + 1, "train_loss": vals[i],
                                          **{f"eval_{k}": v for k, v in m.items()},
                                          "wall_time_s": round(time.perf_counter() - t0, 3)})
                        trackers_[i].log(curves[i][-1])
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                for i in range(n):
                    if active[i]:
                        _checkpoint(todo[i].ident["dir"], stack.write_back(i),
                                    stack.trial_optimizer_state(i, opt, trial_opts[i]), gens[i], curves[i],
                                    step + 1, time.perf_counter() - t0, step_time, todo[i].ident["fingerprint"])
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    batched_steps = max(1, max(done_steps))
    info = trials.describe("batched", seeds, "", batched_with=[m.seed for m in todo],
                           s_per_batched_step=round(step_time / batched_steps, 6),
                           plain_paths=list(stack.plain_paths))
    values = []
    for i, m in enumerate(todo):
        if status[i] == "ok":
            stack.write_back(i)
        # each trial's share of the batched step time
        values.append(_finish(m.cfg, model_name, task_name, m.ident, m.overrides, tasks_[i], mods[i],
                              built[i][2], status[i], reason[i], done_steps[i], curves[i], wall,
                              step_time / batched_steps / n, info, trackers_[i]))
    return values


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
