"""The landscape benchmark (Figures 3 and 13) on a tiny grid."""
import csv
import json

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from benchmarks import landscape as L
from tests.conftest import ROOT


def test_tiny_landscape(tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("landscape", overrides=["models=[stu,transformer]", "grid=3", "train_steps=2", "batch_size=4",
                                              f"out_results={tmp_path}/res", f"out_plots={tmp_path}/plots"])
    rec = L.run(cfg)
    rows = list(csv.DictReader(open(tmp_path / "res" / "smoke" / "landscape.csv")))
    assert len(rows) == 2 * 9 and {"model", "x", "y", "loss", "hess_ratio"} <= set(rows[0])
    ratios = np.array([float(r["hess_ratio"]) for r in rows])
    assert np.all((ratios >= 0) & (ratios <= 1))
    assert (tmp_path / "plots" / "fig3_landscape_smoke.png").stat().st_size > 5000
    assert (tmp_path / "plots" / "fig13_hessian_smoke.png").exists()
    saved = json.loads((tmp_path / "res" / "smoke" / "record.json").read_text())
    assert saved["git_commit"] and saved["models"]["stu"]["backends"]


def test_hessian_2d_of_a_quadratic():
    """For L(theta) = 0.5 theta^T A theta the plane Hessian is [d_i^T A d_j]."""
    class Quad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))

        def forward(self, x):
            return self.w

    A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)

    class T:
        @staticmethod
        def loss(out, batch):
            return 0.5 * out @ A @ out

    class B:
        inputs = None

    m = Quad()
    d1 = [torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)]
    d2 = [torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)]
    H = L.hessian_2d(m, list(m.parameters()), T, B, d1, d2)
    expect = np.array([[2.0, 0.5], [0.5, 4.0]])
    assert np.allclose(H, expect)


def test_directions_are_filter_normalised():
    w = torch.randn(4, 5)
    b = torch.randn(4)
    d = L.filter_normalised_direction([w, b], torch.Generator().manual_seed(0))
    assert torch.allclose(d[0].norm(dim=1), w.norm(dim=1))
    assert torch.all(d[1] == 0)
