"""Loss landscapes (Figure 3) and Hessian eigenvalue ratios (Figures 13 and 24).

    python -m benchmarks.reproduce experiment=fig3_landscape profile=smoke    # Figures 3 and 13 (LDS)
    python -m benchmarks.reproduce experiment=fig24_landscape profile=smoke   # Figure 24 (Ant-v1)
    python -m benchmarks.landscape experiment=fig3_landscape profile=paper models=[stu,stu_t,s4d,mamba2,transformer]

An experiment of ``kind: landscape`` (``conf/experiment/fig3_landscape.yaml``, ``fig24_landscape.yaml``)
names the task, the models (``models``, with ``model_overrides``), the training before the landscape
and the output names. For each model:

1. train ``steps`` steps exactly as the runs do: :func:`benchmarks.loop.make_optimizer` (the task's
   default optimizer merged with ``optimizer.*``, the runs' parameter groups), :class:`loop.Schedule`
   and :func:`loop.train_step` (task loss + the model's MoE auxiliary loss), batches
   ``task.train_batch(step, batch_size, Generator(seed))``, the model initialised after
   ``torch.manual_seed(seed)`` (Figure 3: RMSProp on a random LDS, the Figure 2 setup; Figure 24: AdamW
   on Ant-v1);
2. pick two random directions d1, d2 in parameter space, filter-normalised as in Li et al. (2018) (each
   row of each weight matrix rescaled to the norm of the same row of the trained weights; biases and
   vectors are left at zero);
3. on a fixed batch (``task.eval_batch(batch_size, 10**6 + seed)``), evaluate the objective of the
   training step, :func:`loop.objective` = task loss + auxiliary loss (so MoE models are scored as
   they are trained), at theta + x d1 + y d2 over a ``grid x grid`` square of [-span, span]^2, and with
   ``hessian: true`` the 2 x 2 Hessian of that objective restricted to the plane, [d_i^T H d_j], from
   exact Hessian-vector products (parameters that the forward does not use, e.g. an MoE expert that
   gets no token, contribute zeros), and its eigenvalue ratio |lambda_min / lambda_max| (1: round,
   0: elongated).

Writes ``<paths.results>/<experiment>/<profile>/landscape.csv`` (model, x, y, loss = task_loss +
aux_loss, task_loss, aux_loss, hess_ratio, hess_min, hess_max) and ``record.json`` (config, optimizer,
per-model parameters, backends, training losses, the objective at the trained point, mean ratios,
commit, versions, device, wall time), and ``<paths.plots>/<experiment>/<profile>/<files.surface>.png``
(surfaces) and ``<files.hessian>.png`` (ratio heat maps).
"""
from __future__ import annotations

import math
import pathlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import models
from benchmarks import loop
from benchmarks.config import ConfigError, hydra_entry, shapes_of
from benchmarks.records import atomic_write_csv, atomic_write_json, device_info, git_commit, package_versions, save_diff
from benchmarks.report import LABELS
from benchmarks.timing import (device_and_dtype, dry_run, optimizer_summary, require_int, require_kind, require_models,
                               require_number, run_settings, say)


# ------------------------------------------------------------------------------------ the geometry
def filter_normalised_direction(params: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    """A random direction (drawn on the CPU from ``gen``), each row of each matrix rescaled to the
    norm of the same row of ``params``; zero on biases and other vectors."""
    out = []
    for p in params:
        d = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if p.dim() <= 1:
            d.zero_()  # Li et al.: no perturbation of biases and norm gains
        else:
            pn = p.detach().cpu().reshape(p.shape[0], -1).norm(dim=1)
            dn = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-12)
            d = d * (pn / dn).reshape(-1, *([1] * (p.dim() - 1)))
        out.append(d.to(p.device))
    return out


def _set(params, base, d1, d2, x: float, y: float) -> None:
    with torch.no_grad():
        for p, b, a, c in zip(params, base, d1, d2):
            p.copy_(b + x * a + y * c)


def _dot(xs, ys) -> torch.Tensor:
    """sum_i <x_i, y_i> over the pairs where both are given (None: an unused parameter, zero)."""
    terms = [(a * b).sum() for a, b in zip(xs, ys) if a is not None and b is not None]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def hessian_2d(model, params, task, batch, d1, d2) -> np.ndarray:
    """[d_i^T H d_j] of :func:`benchmarks.loop.objective`'s total (task loss + auxiliary loss) at the
    current parameters, by double backward (SDPA's math kernel, the one with a double backward).
    Parameters the forward does not use (an MoE expert without tokens) have zero gradient and zero
    Hessian rows."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return _hessian_2d(model, params, task, batch, d1, d2)


def _hessian_2d(model, params, task, batch, d1, d2) -> np.ndarray:
    _, _, total = loop.objective(model, task, batch)
    grads = torch.autograd.grad(total, params, create_graph=True, allow_unused=True)
    H = np.zeros((2, 2))
    for i, di in enumerate((d1, d2)):
        gd = _dot(grads, di)
        if not gd.requires_grad:  # the gradient does not depend on the parameters: zero curvature
            continue
        hv = torch.autograd.grad(gd, params, retain_graph=True, allow_unused=True)
        for j, dj in enumerate((d1, d2)):
            H[i, j] = float(_dot(hv, dj))
    return (H + H.T) / 2


def ratio(H: np.ndarray) -> tuple[float, float, float]:
    """(|lambda_min| / |lambda_max|, lambda_min, lambda_max) of a symmetric 2 x 2 matrix."""
    ev = np.linalg.eigvalsh(H)
    big = np.abs(ev).max()
    return (float(np.abs(ev).min() / big) if big > 0 else float("nan")), float(ev[0]), float(ev[1])


# --------------------------------------------------------------------------------------- one model
@dataclass
class Landscape:
    name: str
    rows: list[dict[str, Any]]
    centre: dict[str, float]              # the objective at the trained point: loss, task_loss, aux_loss
    train_losses: list[float]             # task loss of every training step
    train_aux: list[float]                # auxiliary loss of every training step
    status: str                           # ok | diverged (a step with a non-finite loss was not applied)
    params: int
    backends: str
    optimizer: dict[str, Any]
    model: torch.nn.Module = field(repr=False)   # at the trained point
    batch: Any = field(repr=False)               # the fixed landscape batch (on the device)


def landscape_of(name: str, task, spec: dict[str, Any]) -> Landscape:
    """Train model ``name`` on ``task`` and measure its landscape; ``spec`` is :func:`check`'s."""
    device, dtype, seed = spec["device"], spec["dtype"], spec["seed"]
    steps, bs, opt_spec = spec["steps"], spec["batch_size"], spec["optimizer"]
    torch.manual_seed(seed)
    model = models.build_model(name, **task.model_shapes(), **spec["model_overrides"]).to(device=device, dtype=dtype)
    model.train()
    opt = loop.make_optimizer(model, opt_spec)
    sched = loop.Schedule(opt, steps, opt_spec)
    gen = torch.Generator().manual_seed(seed)
    losses, auxes, status = [], [], "ok"
    for step in range(steps):
        sched.set(step)
        batch = loop.to_device(task.train_batch(step, bs, gen), device, dtype)
        r = loop.train_step(model, task, batch, opt, opt_spec.get("grad_clip"))
        losses.append(r.loss)
        auxes.append(r.aux)
        if not r.applied:
            status = "diverged"
            break
    opt_info = optimizer_summary(opt)
    del opt
    model.zero_grad(set_to_none=True)  # the Hessian uses autograd.grad; the training gradients are not needed
    batch = loop.to_device(task.eval_batch(bs, 10**6 + seed), device, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    base = [p.detach().clone() for p in params]
    dgen = torch.Generator().manual_seed(seed + 1)
    d1, d2 = filter_normalised_direction(params, dgen), filter_normalised_direction(params, dgen)
    axis = np.linspace(-spec["span"], spec["span"], spec["grid"])
    rows = []
    try:
        for x in axis:
            for y in axis:
                _set(params, base, d1, d2, float(x), float(y))
                with torch.no_grad():
                    task_loss, aux, total = loop.objective(model, task, batch)
                row = {"model": name, "x": float(x), "y": float(y), "loss": float(total), "task_loss": float(task_loss),
                       "aux_loss": float(aux)}
                if spec["hessian"]:
                    row["hess_ratio"], row["hess_min"], row["hess_max"] = ratio(hessian_2d(model, params, task, batch, d1, d2))
                rows.append(row)
    finally:
        _set(params, base, d1, d2, 0.0, 0.0)
    with torch.no_grad():
        task_loss, aux, total = loop.objective(model, task, batch)
    centre = {"loss": float(total), "task_loss": float(task_loss), "aux_loss": float(aux)}
    return Landscape(name, rows, centre, losses, auxes, status, models.count_params(model), models.backends(model),
                     opt_info, model, batch)


# ------------------------------------------------------------------------------------------- plots
def plot(rows, names, out_plots: pathlib.Path, profile: str, hessian: bool, files: dict, titles: dict) -> list[pathlib.Path]:
    """The surfaces and (with ``hessian``) the ratio heat maps; ``files`` / ``titles`` (keys
    ``surface``, ``hessian``) come from the experiment's config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_plots.mkdir(parents=True, exist_ok=True)
    paths = []
    n = len(names)
    grids = {}
    for name in names:
        r = [row for row in rows if row["model"] == name]
        xs = sorted({row["x"] for row in r})
        k = len(xs)
        Z = np.array([row["loss"] for row in r]).reshape(k, k).T  # [y, x]
        R = np.array([row.get("hess_ratio", np.nan) for row in r]).reshape(k, k).T
        grids[name] = (np.array(xs), Z, R)
    fig = plt.figure(figsize=(3.6 * n, 3.4), dpi=140)
    for i, name in enumerate(names):
        xs, Z, _ = grids[name]
        X, Y = np.meshgrid(xs, xs)
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        ax.plot_surface(X, Y, np.log10(np.maximum(Z, 1e-30)), cmap="viridis", linewidth=0, antialiased=True)
        ax.set_title(LABELS.get(name, name), fontsize=10)
        ax.set_xlabel("x step", fontsize=7)
        ax.set_ylabel("y step", fontsize=7)
        ax.set_zlabel("log10 loss", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{titles['surface']} ({profile} profile)", fontsize=10)
    fig.tight_layout()
    p = out_plots / f"{files['surface']}.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)
    if hessian:
        fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 1.0, 3.6), dpi=140, squeeze=False, constrained_layout=True)
        im = None
        for ax, name in zip(axes[0], names):
            xs, Z, R = grids[name]
            im = ax.imshow(R, origin="lower", extent=(xs[0], xs[-1], xs[0], xs[-1]), cmap="coolwarm",
                           vmin=0, vmax=1, aspect="auto")
            logZ = np.log10(np.maximum(Z, 1e-30))
            if len(xs) > 1 and np.ptp(logZ) > 0:
                ax.contour(xs, xs, logZ, colors="k", linewidths=0.5, levels=10)
            ax.set_title(f"{LABELS.get(name, name)} (mean {np.nanmean(R):.2f})", fontsize=10)
            ax.set_xlabel("x step", fontsize=8)
        axes[0][0].set_ylabel("y step", fontsize=8)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="|λmin / λmax|")
        fig.suptitle(f"{titles['hessian']} ({profile} profile)", fontsize=10)
        p = out_plots / f"{files['hessian']}.png"
        fig.savefig(p)
        plt.close(fig)
        paths.append(p)
    return paths


# -------------------------------------------------------------------------------------------- run
def check(cfg: DictConfig) -> dict[str, Any]:
    """Everything a landscape needs, checked before any work and before any file (or dataset) is
    written; a :class:`ConfigError` names the key and the valid choices."""
    require_kind(cfg, "landscape", "benchmarks.landscape")
    names = require_models("models", cfg.get("models"))
    grid = require_int("grid", cfg.get("grid"), 2)
    span = require_number("span", cfg.get("span"), positive=True, allow_none=False)
    if not isinstance(cfg.get("hessian"), bool):
        raise ConfigError(f"hessian must be true or false, got {cfg.get('hessian')!r}")
    seed = require_int("seed", cfg.get("seed"), 0)
    device, dtype = device_and_dtype(cfg)
    task_name, s = run_settings(cfg)
    steps = require_int("steps", s["steps"])
    overrides = OmegaConf.to_container(cfg.get("model_overrides") or {}, resolve=True)
    for key in ("files", "titles"):
        for k in ("surface", "hessian"):
            if not OmegaConf.select(cfg, f"{key}.{k}"):
                raise ConfigError(f"{key}.{k} is not set (the experiment names its figures)")
    shapes = shapes_of(cfg)
    for m in names:
        dry_run(m, shapes, overrides, device, dtype)
    return {"models": names, "grid": grid, "span": span, "hessian": bool(cfg.hessian), "seed": seed,
            "device": device, "dtype": dtype, "task_name": task_name, "steps": steps,
            "batch_size": int(s["batch_size"]), "optimizer": s["optimizer"], "model_overrides": overrides,
            "shapes": shapes}


def run(cfg: DictConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    spec = check(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(require_int("threads", cfg.threads))
    profile, exp = str(cfg.profile.name), str(cfg.experiment_name)
    out_results = pathlib.Path(cfg.paths.results) / exp / profile
    out_plots = pathlib.Path(cfg.paths.plots) / exp / profile
    task = instantiate(cfg.task, _convert_="all")  # makes missing data (MuJoCo); its RNG use never reaches ours
    rows, info = [], {}
    names = spec["models"]
    bar = None
    if cfg.get("progress", True):
        from tqdm.auto import tqdm

        bar = tqdm(names, desc=f"{exp} landscapes", file=sys.stderr)
    for name in names:
        t = time.perf_counter()
        r = landscape_of(name, task, spec)
        rows += r.rows
        ratios = np.array([row.get("hess_ratio", np.nan) for row in r.rows])
        losses = [row["loss"] for row in r.rows]
        info[name] = {"backends": r.backends, "params": r.params, "status": r.status, "optimizer": r.optimizer,
                      "train_loss_first": r.train_losses[0] if r.train_losses else None,
                      "train_loss_last": r.train_losses[-1] if r.train_losses else None,
                      "train_aux_last": r.train_aux[-1] if r.train_aux else None,
                      "centre": r.centre, "loss_max_over_min": max(losses) / min(losses) if min(losses) > 0 else None,
                      "mean_hess_ratio": float(np.nanmean(ratios)) if spec["hessian"] and np.isfinite(ratios).any() else None,
                      "wall_time_s": round(time.perf_counter() - t, 2)}
        del r
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    atomic_write_csv(out_results / "landscape.csv", rows)
    plots = plot(rows, names, out_plots, profile, spec["hessian"], OmegaConf.to_container(cfg.files, resolve=True),
                 OmegaConf.to_container(cfg.titles, resolve=True))
    record = {"experiment": exp, "kind": "landscape", "profile": profile, "task": spec["task_name"],
              "config": OmegaConf.to_container(cfg, resolve=True),
              "settings": {k: spec[k] for k in ("steps", "batch_size", "optimizer", "grid", "span", "hessian", "seed",
                                                "model_overrides", "shapes")},
              "dtype": str(cfg.dtype), "git_commit": git_commit(), "versions": package_versions(),
              "device": device_info(spec["device"]), "backends": {n: info[n]["backends"] for n in names},
              "models": info,
              "summary": {n: {"loss_at_centre": info[n]["centre"]["loss"], "aux_loss_at_centre": info[n]["centre"]["aux_loss"],
                              "loss_max_over_min": info[n]["loss_max_over_min"], "mean_hess_ratio": info[n]["mean_hess_ratio"]}
                          for n in names},
              "files": {"csv": str(out_results / "landscape.csv"), "plots": [str(p) for p in plots]},
              "wall_time_s": round(time.perf_counter() - t0, 2)}
    record["git_diff"] = save_diff(out_results, record["git_commit"])
    atomic_write_json(out_results / "record.json", record)
    for name in names:
        s = record["summary"][name]
        mr = s["mean_hess_ratio"]
        say(f"{LABELS.get(name, name):12s} objective at the trained point {s['loss_at_centre']:.4g} "
            f"(aux {s['aux_loss_at_centre']:.3g}); max/min over the grid {s['loss_max_over_min'] or math.nan:.3g}; "
            f"mean |lmin/lmax| {'-' if mr is None else f'{mr:.3f}'}")
    say(f"wrote {out_results} and {out_plots} in {record['wall_time_s']:.0f} s")
    return record


main = hydra_entry(run)


if __name__ == "__main__":
    from benchmarks.landscape import main as _main

    _main()
