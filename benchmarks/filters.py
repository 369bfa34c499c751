"""Figure 12: the first spectral filters of the STU (appendix A), drawn from the suite's own filters.

    python -m benchmarks.filters                       # or: make reproduce-fig12
    python -m benchmarks.filters --seq-len 1000 --k 20 --variant hankel_L

The filters are ``models.spectral.spectral_filters(seq_len, k, variant)``: the top-k eigenvectors
of the Hankel matrix Z, each scaled by its eigenvalue to the power 1/4 (float64). The paper does not
say at which length its Figure 12 was drawn; the default is 512, the window of the paper-profile
robotics runs. Writes

* ``results/fig12_filters/filters_L<L>_k<k>_<variant>.csv``: one column per filter, one row per lag;
* ``results/fig12_filters/record_L<L>_k<k>_<variant>.json``: eigenvalues, the eigen-equation residual
  and orthonormality error of the unscaled eigenvectors, commit, versions, device;
* ``plots/fig12_spectral_filters_L<L>_<variant>.png``: filter value against lag, one panel per filter.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys

import torch

from benchmarks.records import REPO, atomic_write_csv, atomic_write_json, device_info, git_commit, package_versions
from models.spectral import VARIANTS, hankel_matrix, spectral_eigs, spectral_filters


def make(seq_len: int, k: int, variant: str, results: pathlib.Path, plots: pathlib.Path) -> dict:
    if variant not in VARIANTS:
        raise SystemExit(f"unknown filter variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if not 1 <= k <= seq_len:
        raise SystemExit(f"need 1 <= k <= seq_len, got k={k}, seq_len={seq_len}")
    phi = spectral_filters(seq_len, k, variant)
    vecs, eigs = spectral_eigs(seq_len, k, variant)
    Z = hankel_matrix(seq_len, variant)
    residual = float((Z @ vecs - vecs * eigs).abs().max())
    ortho = float((vecs.T @ vecs - torch.eye(k, dtype=vecs.dtype)).abs().max())

    tag = f"L{seq_len}_k{k}_{variant}"
    out = pathlib.Path(results) / "fig12_filters"
    rows = [{"lag": t, **{f"phi_{j + 1}": float(phi[t, j]) for j in range(k)}} for t in range(seq_len)]
    atomic_write_csv(out / f"filters_{tag}.csv", rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 5
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
    plot = pathlib.Path(plots) / f"fig12_spectral_filters_L{seq_len}_{variant}.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot)
    plt.close(fig)

    record = {"figure": "12", "seq_len": seq_len, "k": k, "variant": variant,
              "eigenvalues": [float(e) for e in eigs], "eigen_residual_max": residual,
              "orthonormality_error_max": ortho, "dtype": "float64", "git_commit": git_commit(),
              "versions": package_versions(), "device": device_info("cpu"), "plot": str(plot),
              "csv": str(out / f"filters_{tag}.csv")}
    atomic_write_json(out / f"record_{tag}.json", record)
    print(f"[fig12] {plot}: {k} filters at L={seq_len} ({variant}); eigenvalues {float(eigs[0]):.3g} .. "
          f"{float(eigs[-1]):.3g}; residual {residual:.1e}, orthonormality error {ortho:.1e}", file=sys.stderr)
    return record


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--k", type=int, default=20, help="number of filters drawn (the paper's figure: 20)")
    ap.add_argument("--variant", default="hankel", help=f"one of {', '.join(VARIANTS)}")
    ap.add_argument("--results", default=str(REPO / "results"))
    ap.add_argument("--plots", default=str(REPO / "plots"))
    a = ap.parse_args(argv)
    return make(a.seq_len, a.k, a.variant, pathlib.Path(a.results), pathlib.Path(a.plots))


if __name__ == "__main__":
    main()
