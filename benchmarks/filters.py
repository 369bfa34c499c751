"""Figure 12: the first spectral filters of the STU (appendix A), drawn from the suite's own filters.

    python -m benchmarks.reproduce experiment=fig12_filters profile=smoke
    python -m benchmarks.filters experiment=fig12_filters profile=smoke [filters.seq_len=1000 filters.variant=hankel_L]

The filters are ``models.spectral.spectral_filters(seq_len, k, variant)``: the top-k eigenvectors of
the Hankel matrix Z, each scaled by its eigenvalue to the power 1/4 (float64). The options are the
``filters:`` block of ``conf/experiment/fig12_filters.yaml`` (``kind: filters``). The paper does not
say at which length its Figure 12 was drawn; the default is 512, the window of the paper-profile
robotics runs. The figure does not depend on the profile; it is filed under it like every result.
Writes

* ``<paths.results>/fig12_filters/<profile>/filters.csv``: one column per filter, one row per lag;
* ``<paths.results>/fig12_filters/<profile>/record.json``: the options, eigenvalues, the
  eigen-equation residual and orthonormality error of the unscaled eigenvectors, commit, versions,
  device, wall time;
* ``<paths.plots>/fig12_filters/<profile>/fig12_spectral_filters.png``: filter value against lag, one
  panel per filter.
"""
from __future__ import annotations

import math
import pathlib
import sys
import time
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from benchmarks.config import ConfigError, hydra_entry
from benchmarks.records import atomic_write_csv, atomic_write_json, device_info, git_commit, package_versions, save_diff
from benchmarks.config import require_int
from benchmarks.timing import require_kind
from models.spectral import VARIANTS, hankel_matrix, spectral_eigs, spectral_filters


def check(cfg: DictConfig) -> dict[str, Any]:
    require_kind(cfg, "filters", "benchmarks.filters")
    seq_len = require_int("filters.seq_len", OmegaConf.select(cfg, "filters.seq_len"), 1)
    k = require_int("filters.k", OmegaConf.select(cfg, "filters.k"), 1)
    variant = OmegaConf.select(cfg, "filters.variant")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown filters.variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    if k > seq_len:
        raise ConfigError(f"filters.k must be <= filters.seq_len, got k={k}, seq_len={seq_len}")
    return {"seq_len": seq_len, "k": k, "variant": str(variant)}


def make(seq_len: int, k: int, variant: str, out: pathlib.Path, plot_path: pathlib.Path) -> dict[str, Any]:
    """The filters, their checks, the CSV and the figure; returns the numbers of the record."""
    phi = spectral_filters(seq_len, k, variant)
    vecs, eigs = spectral_eigs(seq_len, k, variant)
    Z = hankel_matrix(seq_len, variant)
    residual = float((Z @ vecs - vecs * eigs).abs().max())
    ortho = float((vecs.T @ vecs - torch.eye(k, dtype=vecs.dtype)).abs().max())
    rows = [{"lag": t, **{f"phi_{j + 1}": float(phi[t, j]) for j in range(k)}} for t in range(seq_len)]
    atomic_write_csv(out / "filters.csv", rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(5, k)
    nrows = math.ceil(k / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 2.0 * nrows), dpi=120, sharex=True, squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= k:
            ax.axis("off")
            continue
        ax.plot(phi[:, j].numpy(), lw=0.9, color="tab:blue")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"filter {j + 1}  (σ = {float(eigs[j]):.2e})", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("lag", fontsize=7)
    fig.suptitle(f"Figure 12: the first {k} spectral filters (L = {seq_len}, {variant}), eigenvectors of Z "
                 f"scaled by σ^(1/4)", fontsize=10)
    fig.tight_layout()
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plot_path.with_name(f".{plot_path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(plot_path)
    return {"eigenvalues": [float(e) for e in eigs], "eigen_residual_max": residual,
            "orthonormality_error_max": ortho}


def run(cfg: DictConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    c = check(cfg)
    profile, exp = str(cfg.profile.name), str(cfg.experiment_name)
    out = pathlib.Path(cfg.paths.results) / exp / profile
    plot = pathlib.Path(cfg.paths.plots) / exp / profile / "fig12_spectral_filters.png"
    nums = make(c["seq_len"], c["k"], c["variant"], out, plot)
    record = {"experiment": exp, "kind": "filters", "figure": "12", "profile": profile, **c, **nums,
              "dtype": "float64", "config": OmegaConf.to_container(cfg, resolve=True), "git_commit": git_commit(),
              "versions": package_versions(), "device": device_info("cpu"), "backends": "spectral_filters=torch.linalg.eigh",
              "files": {"csv": str(out / "filters.csv"), "plot": str(plot)},
              "wall_time_s": round(time.perf_counter() - t0, 2)}
    record["git_diff"] = save_diff(out, record["git_commit"])
    atomic_write_json(out / "record.json", record)
    e = nums["eigenvalues"]
    print(f"[fig12] {plot}: {c['k']} filters at L={c['seq_len']} ({c['variant']}); eigenvalues {e[0]:.3g} .. "
          f"{e[-1]:.3g}; residual {nums['eigen_residual_max']:.1e}, orthonormality error "
          f"{nums['orthonormality_error_max']:.1e}", file=sys.stderr)
    return record


main = hydra_entry(run)


if __name__ == "__main__":
    from benchmarks.filters import main as _main

    _main()
