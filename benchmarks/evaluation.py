"""Evaluations of trained runs that need the model: next-step and autoregressive predictions on the
validation trajectories of a MuJoCo task (Figures 7/8, 17/18, 20/21, 22/23), and the no-change
reference predictor. Each writes its result beside the run (``evaluation_P<P>_n<N>.npz``: the
per-step losses and the first predictions averaged over the trajectories, :func:`summarise`; the
report commits a copy to ``results/<E>/<profile>/evaluations/``) or, for the reference, beside the
experiment's runs; the reports read those files and never build a model.

Prediction evaluation: on each validation trajectory (T = 1000 steps) the model makes ``P`` = 500
predictions of ``x_{t+1}`` for ``t = t0, ..., t0+P-1`` with ``t0 = min(context-1, T-P)`` (the earliest
start at which every window is full), each from the window of the last ``context`` inputs
``[x_s, u_s]`` (shorter only when ``context > T-P+1``).

* next-step: the window holds ground-truth states and actions (as in training/validation);
* autoregressive: the states of the window after ``t0`` are the model's own earlier predictions; the
  rollout function is only given ``x_0..x_t0``, so it cannot see any later ground-truth state.
  Actions ``u_t`` stay ground truth: they are exogenous inputs (the recorded agent's torques).

The validation trajectories are given to the model in the units the validation loss uses (the task's
``split="val"`` normalisation: the training statistics, or under ``normalisation=per_split`` the
validation split's own, as the authors' loader). Each prediction step is scored twice: ``loss_*``,
the suite's ``1/2 ||x^_{t+1} - x_{t+1}||^2`` in those units, and ``mse_*``, the paper's unit (mean
squared error per feature, the validation split normalised by its own statistics: ``nn.MSELoss`` of
the authors' ``predict_states``).

How many predictions, from which trajectories, is a choice the paper leaves open ("losses averaged over
500 predictions"; Figures 22/23 plot 50 time steps). The authors' code (windsornguyen/spectral_ssm,
``models/*/predict.py`` and ``utils/plot_predict_mean.py``) predicts ``steps = 50`` consecutive states
from ``init = sl`` on each of up to ``num_preds = 500`` validation trajectories (batch size 1) and plots the
per-step loss averaged over them: ``P = 50`` from ``t0 = context - 1`` on every validation trajectory,
the paper profile's setting. The smoke profile keeps ``P = 500`` on a few trajectories
(``profile.robotics_eval``).
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from typing import Any

import numpy as np
import torch

# Windows per forward call of the evaluation. Small batches are faster on a CPU: Ant-v1's Mamba-2
# (windows of 512, one thread) took 58 ms per window at 256 windows a call, 29 ms at 64 and 25 ms
# at 16 (the activations of a large batch leave the caches). Each window's prediction is the same
# computation at any batch size (equal to rounding).
EVAL_BATCH = 16


@torch.no_grad()
def next_step_predictions(model, x: torch.Tensor, u: torch.Tensor, t0: int, n_pred: int, context: int,
                          batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Prediction ``k`` (0-based) of ``x_{t0+k+1}`` from the ground-truth window of inputs
    ``[x_s, u_s]``, ``s = max(0, t-context+1) .. t``, ``t = t0 + k``. ``x``: (n, >= t0+n_pred, dx)
    normalised states, ``u``: (n, >= t0+n_pred, du) normalised actions. Returns (n, n_pred, dx)."""
    n = x.shape[0]
    out = None
    by_len: dict[int, list[int]] = {}
    for k in range(n_pred):
        t = t0 + k
        by_len.setdefault(t - max(0, t - context + 1) + 1, []).append(k)
    for length, ks in by_len.items():
        ks_t = torch.tensor(ks)
        starts = t0 + ks_t - length + 1
        idx = starts[:, None] + torch.arange(length)[None, :]  # (nk, length)
        inp = torch.cat([x[:, idx], u[:, idx]], dim=-1).reshape(n * len(ks), length, -1)
        preds = torch.cat([model(inp[i: i + batch_size])[:, -1] for i in range(0, len(inp), batch_size)])
        if out is None:
            out = torch.empty(n, n_pred, preds.shape[-1], dtype=preds.dtype, device=preds.device)
        out[:, ks_t] = preds.reshape(n, len(ks), -1)
    return out


@torch.no_grad()
def autoregressive_predictions(model, x_hist: torch.Tensor, u: torch.Tensor, n_pred: int,
                               context: int, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Autoregressive rollout. ``x_hist``: (n, t0+1, dx) the ground-truth states ``x_0..x_t0`` -- the
    only states this function is given; ``u``: (n, >= t0+n_pred, du) the actions (exogenous inputs).
    Prediction ``k`` of ``x_{t0+k+1}`` comes from the window ``s..t`` (``t = t0+k``) whose states after
    ``t0`` are the model's own earlier predictions. Returns (n, n_pred, dx)."""
    t0 = x_hist.shape[1] - 1
    if u.shape[1] < t0 + n_pred:
        raise ValueError(f"need actions up to u_{t0 + n_pred - 1}, got {u.shape[1]} steps")
    buf = torch.empty(x_hist.shape[0], t0 + 1 + n_pred, x_hist.shape[2], dtype=x_hist.dtype, device=x_hist.device)
    buf[:, : t0 + 1] = x_hist
    for k in range(n_pred):
        t = t0 + k
        s = max(0, t - context + 1)
        inp = torch.cat([buf[:, s: t + 1], u[:, s: t + 1]], dim=-1)
        buf[:, t + 1] = torch.cat([model(inp[i: i + batch_size])[:, -1] for i in range(0, len(inp), batch_size)])
    return buf[:, t0 + 1:].clone()


def prediction_losses(model, task, n_pred: int, max_traj: int | None = None, device="cpu") -> dict[str, np.ndarray]:
    """Next-step and autoregressive predictions on the validation trajectories of ``task``."""
    traj = task.val_trajectories()
    n = len(traj["states"]) if max_traj is None else min(int(max_traj), len(traj["states"]))
    X = torch.from_numpy(task.normalize_states(traj["states"][:n], split="val")).to(device)
    U = torch.from_numpy(task.normalize_actions(traj["actions"][:n], split="val")).to(device)
    T = U.shape[1]
    if not 0 < n_pred <= T:
        raise ValueError(f"{n_pred} predictions do not fit trajectories of {T} steps")
    L = int(task.context)
    t0 = min(L - 1, T - n_pred)  # full windows from the first prediction on, when the trajectory allows it
    was = model.training
    model.eval()
    ns = next_step_predictions(model, X, U, t0, n_pred, L)
    ar = autoregressive_predictions(model, X[:, : t0 + 1], U, n_pred, L)
    model.train(was)
    tgt = X[:, t0 + 1: t0 + 1 + n_pred]
    scale = task.paper_scale().to(device)
    loss = lambda p: (0.5 * (p - tgt).float().pow(2).sum(-1)).cpu().numpy()  # noqa: E731
    mse = lambda p: ((p - tgt).float() * scale).pow(2).mean(-1).cpu().numpy()  # noqa: E731
    den = lambda p: task.denormalize_states(p.cpu().numpy(), split="val")  # noqa: E731
    return {"loss_next": loss(ns), "loss_ar": loss(ar), "mse_next": mse(ns), "mse_ar": mse(ar),
            "pred_next": den(ns), "pred_ar": den(ar),
            "true": traj["states"][:n, t0 + 1: t0 + 1 + n_pred].astype(np.float32), "t0": np.array(t0),
            "seeds": np.asarray(traj["seeds"][:n])}


class Persistence(torch.nn.Module):
    """Reference predictor without training: no change, x^_{t+1} = x_t (the state part of the last input)."""

    def __init__(self, state_dim: int):
        super().__init__()
        self.state_dim = state_dim

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return inp[..., : self.state_dim].clone()


@torch.no_grad()
def validation_metrics(model, task, batch_size: int = 256) -> dict[str, float]:
    """The task's metrics over every validation transition (each batch weighted by its scored
    positions), for any model: ``loss`` is the runner's validation metric."""
    tot: dict[str, float] = {}
    w = 0.0
    for b in task.val_batches(batch_size):
        m = task.metrics(model(b.inputs), b)
        n = float(b.mask.sum())
        for k, v in m.items():
            tot[k] = tot.get(k, 0.0) + v * n
        w += n
    return {k: v / max(w, 1.0) for k, v in tot.items()}


def load_trained(run_dir: pathlib.Path, device="cpu"):
    import models

    ck = torch.load(pathlib.Path(run_dir) / "model.pt", map_location=device, weights_only=False)
    model = models._instantiate(ck["model_config"], f"model {ck.get('model')!r}", **ck["shapes"])
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval()


_TASKS: dict[str, Any] = {}


def task_of(record: dict[str, Any]):
    from hydra.utils import instantiate

    cfg = dict(record["config"]["task"])
    cfg["progress"] = False
    key = json.dumps(cfg, sort_keys=True, default=str)
    if key not in _TASKS:
        _TASKS[key] = instantiate(cfg, _convert_="all")
    return _TASKS[key]


FEATURE_STEPS = 50  # the paper plots the first 50 predictions of a feature (Figures 22/23)
SUMMARY_KEYS = ("loss_next", "loss_ar", "mse_next", "mse_ar", "pred_next", "pred_ar", "true")
LOSS_KEYS = ("loss_next", "loss_ar", "mse_next", "mse_ar")  # per prediction step


def predictions_path(record: dict[str, Any], n_pred: int, max_traj: int | None) -> pathlib.Path:
    """The run's saved evaluation (:func:`summarise`), beside its record."""
    return pathlib.Path(record["_dir"]) / f"evaluation_P{n_pred}_n{max_traj if max_traj is not None else 'all'}.npz"


def summarise(out: dict[str, np.ndarray], steps: int = FEATURE_STEPS) -> dict[str, np.ndarray]:
    """What the reports use of :func:`prediction_losses`, small enough to commit (tens of kB): the
    per-step losses and the first ``steps`` predicted and true states, each averaged over the
    trajectories in float64 and kept with a leading axis of one row (runs stack along it), plus
    ``t0``, the number of trajectories and their seeds."""
    n = min(int(steps), out["true"].shape[1])
    got = {k: np.asarray(out[k], dtype=np.float64) for k in SUMMARY_KEYS}
    summary = {k: got[k].mean(0, keepdims=True) for k in LOSS_KEYS}
    summary.update({k: got[k][:, :n].mean(0, keepdims=True) for k in ("pred_next", "pred_ar", "true")})
    summary.update({"t0": np.asarray(out["t0"]), "n_traj": np.array(out["true"].shape[0]),
                    "seeds": np.asarray(out["seeds"])})
    if "eval_seconds" in out:
        summary["eval_seconds"] = np.asarray(out["eval_seconds"])
    return summary


def load_predictions(record: dict[str, Any], n_pred: int, max_traj: int | None) -> dict[str, np.ndarray]:
    """The saved evaluation of a run (made by :func:`evaluate_run`); reports call only this."""
    path = predictions_path(record, n_pred, max_traj)
    if not path.exists():
        raise SystemExit(f"{path} is missing: evaluate the run first (python -m benchmarks.reproduce "
                         f"experiment={record.get('experiment')} profile={record.get('profile')} does it)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def evaluate_run(record: dict[str, Any], n_pred: int, max_traj: int | None, device="cpu",
                 task=None) -> dict[str, np.ndarray]:
    """The prediction evaluation of one finished run (:func:`summarise` of :func:`prediction_losses`),
    saved in its folder beside ``model.pt``. A run restored from committed results has its saved
    evaluation and no weights (``benchmarks.restore``): that evaluation is used as it is. ``task``:
    the run's task when the caller has it built (the runner, right after training), else it is
    built from the record."""
    rdir = pathlib.Path(record["_dir"])
    cache = predictions_path(record, n_pred, max_traj)
    mpath = rdir / "model.pt"
    if not mpath.exists():
        if cache.exists() and (rdir / "restored.json").exists():
            with np.load(cache) as z:
                return {k: z[k] for k in z.files}
        why = ("it was restored from committed results, which keep its evaluation at other settings but not its "
               "weights" if (rdir / "restored.json").exists() else "the run was made without save_model=true")
        raise SystemExit(f"{mpath} is missing: {why} (train it again with force=true)")
    if cache.exists() and cache.stat().st_mtime >= mpath.stat().st_mtime:
        with np.load(cache) as z:
            if all(k in z.files for k in LOSS_KEYS):  # else made before the paper's unit was saved: redo
                return {k: z[k] for k in z.files}
    t = time.perf_counter()
    model = load_trained(rdir, device)
    full = prediction_losses(model, task if task is not None else task_of(record), n_pred, max_traj, device)
    full["eval_seconds"] = np.array(time.perf_counter() - t)
    out = summarise(full)
    save_npz(cache, out, compressed=True)
    print(f"[eval] {rdir}: next-step {out['loss_next'].mean():.4g}, autoregressive {out['loss_ar'].mean():.4g} "
          f"({float(out['eval_seconds']):.1f}s)", file=sys.stderr)
    return out


def _eval_worker(record: dict[str, Any], n_pred: int, max_traj: int | None, device: str, threads: int | None) -> str:
    if threads:
        torch.set_num_threads(threads)
    evaluate_run(record, n_pred, max_traj, device)
    return record["_dir"]


def evaluate_runs(records: list[dict[str, Any]], n_pred: int, max_traj: int | None, device: str = "cpu",
                  jobs: int = 1, threads: int | None = None) -> None:
    """Fill the prediction caches of ``records``, ``jobs`` processes at a time (one thread each on a
    CPU by default: small sequential forwards of the rollouts slow down badly with more threads
    than free cores)."""
    if jobs <= 1 or len(records) <= 1:
        for r in records:
            _eval_worker(r, n_pred, max_traj, device, threads)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
        for f in [ex.submit(_eval_worker, r, n_pred, max_traj, device, threads) for r in records]:
            f.result()


def save_npz(path: pathlib.Path, arrays: dict[str, Any], compressed: bool = False) -> None:
    """``np.savez`` (``np.savez_compressed`` with ``compressed``) to a unique temporary name in the
    same folder, then rename."""
    import tempfile

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def baseline_path(runs_dir: pathlib.Path, n_pred: int, max_traj: int | None) -> pathlib.Path:
    return pathlib.Path(runs_dir) / "baseline" / f"persistence_P{n_pred}_n{max_traj if max_traj is not None else 'all'}.npz"


def evaluate_baseline(record: dict[str, Any], n_pred: int, max_traj: int | None, out_dir: pathlib.Path) -> dict[str, np.ndarray]:
    """The no-change reference x^_{t+1} = x_t on the validation data of ``record``'s task: its
    validation loss and prediction losses, written to ``out_dir/baseline/`` (once per data)."""
    path = baseline_path(out_dir, n_pred, max_traj)
    task = task_of(record)
    key = json.dumps(record["config"]["task"], sort_keys=True, default=str)
    if path.exists():
        with np.load(path) as z:
            if str(z["task"]) == key and all(k in z.files for k in (*LOSS_KEYS, "val_paper")):
                return {k: z[k] for k in z.files}
    pers = Persistence(task.d_out)
    d = prediction_losses(pers, task, n_pred, max_traj, "cpu")
    vm = validation_metrics(pers, task)
    out = {"val": np.array(vm["loss"]), "val_paper": np.array(vm.get("paper_mse", np.nan)),
           **{k: d[k] for k in LOSS_KEYS}, "task": np.array(key)}
    save_npz(path, out)
    return out
