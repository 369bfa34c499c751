"""Loss landscapes (Figure 3) and Hessian eigenvalue ratios (Figures 13 and 24).

    python -m benchmarks.landscape profile=smoke            # or: make reproduce-fig3 (Figures 3, 13)
    python -m benchmarks.landscape profile=paper models=[stu,stu_t,s4d,mamba2,transformer]
    python -m benchmarks.landscape figure=fig24 profile=smoke   # or: make reproduce-fig24 (Ant-v1)

``figure=`` (``conf/figure/*.yaml``) chooses the task, models, sizes and output names. For each
model: train ``train_steps`` steps with the task's default optimizer (Figure 3: RMSProp on a random
LDS, the Figure 2 setup; Figure 24: AdamW on Ant-v1), pick
two random directions d1, d2 in parameter space, filter-normalised as in Li et al. (2018) (each
row of each weight matrix rescaled to the norm of the same row of the trained weights; biases and
vectors are left at zero), and evaluate the loss of theta + x d1 + y d2 on a fixed batch over a
``grid x grid`` square. With ``hessian=true`` also the 2 x 2 Hessian of the loss restricted to that
plane, [d_i^T H d_j], from exact Hessian-vector products, and its eigenvalue ratio
|lambda_min / lambda_max| (1: round, 0: elongated; Figure 13).

Writes ``<out_results>/<profile>/landscape.csv`` (model, x, y, loss, hess_ratio), ``record.json``
(config, commit, versions, device, backends) and ``plots/<files.surface>_<profile>.png``,
``plots/<files.hessian>_<profile>.png`` (Figure 3: ``results/landscape/``, ``fig3_landscape``,
``fig13_hessian``; Figure 24: ``results/landscape_fig24/``, ``fig24_landscape``, ``fig24_hessian``).
"""
from __future__ import annotations

import pathlib
import sys
import time

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import models
from benchmarks.records import atomic_write_csv, atomic_write_json, device_info, git_commit, package_versions
from benchmarks.report import LABELS
from benchmarks.train import make_optimizer

CONF_DIR = str(pathlib.Path(__file__).resolve().parent.parent / "conf")


def filter_normalised_direction(params: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    out = []
    for p in params:
        d = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if p.dim() <= 1:
            d.zero_()  # Li et al.: no perturbation of biases and norm gains
        else:
            pn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            dn = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-12)
            d = d * (pn / dn).reshape(-1, *([1] * (p.dim() - 1)))
        out.append(d)
    return out


def _loss_at(model, params, base, d1, d2, x, y, task, batch):
    with torch.no_grad():
        for p, b, a, c in zip(params, base, d1, d2):
            p.copy_(b + x * a + y * c)
    return task.loss(model(batch.inputs), batch)


def hessian_2d(model, params, task, batch, d1, d2) -> np.ndarray:
    """[d_i^T H d_j] at the current parameters, by double backward (SDPA's math kernel, the one
    with a double backward)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return _hessian_2d(model, params, task, batch, d1, d2)


def _hessian_2d(model, params, task, batch, d1, d2) -> np.ndarray:
    loss = task.loss(model(batch.inputs), batch)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    H = np.zeros((2, 2))
    for i, di in enumerate((d1, d2)):
        gd = sum((g * d).sum() for g, d in zip(grads, di))
        hv = torch.autograd.grad(gd, params, retain_graph=True, allow_unused=True)
        for j, dj in enumerate((d1, d2)):
            H[i, j] = float(sum((h * d).sum() for h, d in zip(hv, dj) if h is not None))
    return (H + H.T) / 2


def landscape(model_name: str, cfg: DictConfig):
    torch.manual_seed(cfg.seed)
    task = instantiate(cfg.task, _convert_="all")
    model = models.build_model(model_name, **task.model_shapes(), **OmegaConf.to_container(cfg.model_overrides))
    opt = make_optimizer(model, dict(task.default_optimizer))
    gen = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.train_steps):
        b = task.train_batch(step, cfg.batch_size, gen)
        loss = task.loss(model(b.inputs), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    batch = task.eval_batch(cfg.batch_size, 10**6 + cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    base = [p.detach().clone() for p in params]
    dgen = torch.Generator().manual_seed(cfg.seed + 1)
    d1, d2 = filter_normalised_direction(params, dgen), filter_normalised_direction(params, dgen)
    axis = np.linspace(-cfg.span, cfg.span, int(cfg.grid))
    rows = []
    for x in axis:
        for y in axis:
            loss = float(_loss_at(model, params, base, d1, d2, float(x), float(y), task, batch).detach())
            row = {"model": model_name, "x": float(x), "y": float(y), "loss": loss}
            if cfg.hessian:
                ev = np.linalg.eigvalsh(hessian_2d(model, params, task, batch, d1, d2))
                big = np.abs(ev).max()
                row["hess_ratio"] = float(np.abs(ev).min() / big) if big > 0 else float("nan")
                row["hess_min"], row["hess_max"] = float(ev[0]), float(ev[1])
            rows.append(row)
    with torch.no_grad():
        for p, b in zip(params, base):
            p.copy_(b)
    return rows, models.backends(model), models.count_params(model)


def plot(rows, names, out_plots: pathlib.Path, profile: str, hessian: bool, files: dict,
         titles: dict) -> list[pathlib.Path]:
    """The surfaces and (with ``hessian``) the ratio heat maps; ``files`` / ``titles`` (keys
    ``surface``, ``hessian``) come from the figure's config (``conf/figure/*.yaml``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        ax.plot_surface(X, Y, np.log10(Z), cmap="viridis", linewidth=0, antialiased=True)
        ax.set_title(LABELS.get(name, name), fontsize=10)
        ax.set_xlabel("x step", fontsize=7)
        ax.set_ylabel("y step", fontsize=7)
        ax.set_zlabel("log10 loss", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{titles['surface']} ({profile} profile)", fontsize=10)
    fig.tight_layout()
    p = out_plots / f"{files['surface']}_{profile}.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)
    if hessian:
        fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 1.0, 3.6), dpi=140, squeeze=False, constrained_layout=True)
        for ax, name in zip(axes[0], names):
            xs, Z, R = grids[name]
            im = ax.imshow(R, origin="lower", extent=(xs[0], xs[-1], xs[0], xs[-1]), cmap="coolwarm",
                           vmin=0, vmax=1, aspect="auto")
            ax.contour(xs, xs, np.log10(Z), colors="k", linewidths=0.5, levels=10)
            ax.set_title(LABELS.get(name, name), fontsize=10)
            ax.set_xlabel("x step", fontsize=8)
        axes[0][0].set_ylabel("y step", fontsize=8)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="|λmin / λmax|")
        fig.suptitle(f"{titles['hessian']} ({profile} profile)", fontsize=10)
        p = out_plots / f"{files['hessian']}_{profile}.png"
        fig.savefig(p)
        plt.close(fig)
        paths.append(p)
    return paths


def run(cfg: DictConfig) -> dict:
    names = list(cfg.models)
    bad = [m for m in names if m not in models.available_models()]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; valid models: {', '.join(models.available_models())}")
    profile = cfg.profile.name
    out_results = pathlib.Path(cfg.out_results) / profile
    out_plots = pathlib.Path(cfg.out_plots)
    out_plots.mkdir(parents=True, exist_ok=True)
    rows, info = [], {}
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    for name in tqdm(names, desc="landscapes", file=sys.stderr):
        t = time.perf_counter()
        r, backend, params = landscape(name, cfg)
        rows += r
        info[name] = {"backends": backend, "params": params, "wall_time_s": round(time.perf_counter() - t, 2)}
    atomic_write_csv(out_results / "landscape.csv", rows)
    plots = plot(rows, names, out_plots, profile, bool(cfg.hessian), OmegaConf.to_container(cfg.files),
                 OmegaConf.to_container(cfg.titles))
    summary = {}
    for name in names:
        r = [row for row in rows if row["model"] == name]
        centre = min(r, key=lambda row: abs(row["x"]) + abs(row["y"]))
        ratios = np.array([row.get("hess_ratio", np.nan) for row in r])
        summary[name] = {"loss_at_centre": centre["loss"], "loss_max_over_min": max(x["loss"] for x in r) / min(x["loss"] for x in r),
                         "mean_hess_ratio": float(np.nanmean(ratios)) if cfg.hessian else None}
    record = {"config": OmegaConf.to_container(cfg, resolve=True), "git_commit": git_commit(),
              "versions": package_versions(), "device": device_info("cpu"), "models": info, "summary": summary,
              "wall_time_s": round(time.perf_counter() - t0, 2), "plots": [str(p) for p in plots]}
    atomic_write_json(out_results / "record.json", record)
    for name, s in summary.items():
        print(f"{LABELS.get(name, name):12s} loss at centre {s['loss_at_centre']:.4g}  max/min over grid "
              f"{s['loss_max_over_min']:.3g}  mean |lmin/lmax| {s['mean_hess_ratio']}", file=sys.stderr)
    return record


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="landscape")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    from benchmarks.landscape import main as _main

    _main()
