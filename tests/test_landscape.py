"""The landscape experiments (Figures 3, 13 and 24) at tiny sizes: end to end into tmp_path, the MoE
auxiliary loss in the objective, and the Hessian when an MoE expert gets no token (forced, so the
test does not depend on which expert a CPU's rounding picks)."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from conftest import paths_overrides
import torch
from hydra.utils import instantiate

import models
from benchmarks import landscape as L
from benchmarks.config import ConfigError, compose
from models.blocks import MoE
from tasks.base import RandomTask

# A tiny Ant dataset (6 trajectories x 40 steps, a 128-step local PPO agent; ~10 s once per module)
# under a temporary data root; the hub is never contacted.
TINY_ANT = {"n_traj": 6, "steps": 40, "shard_size": 3, "n_envs": 2, "seed": 0, "agent_timesteps": 128,
            "agent_seed": 0, "eval_episodes": 1}


pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def tiny_ant_data(tmp_path_factory):
    pytest.importorskip("mujoco", reason="needs the [mujoco] extra")
    pytest.importorskip("seals", reason="needs the [mujoco] extra")
    data = tmp_path_factory.mktemp("data")
    old = os.environ.get("FSB_OFFLINE")
    os.environ["FSB_OFFLINE"] = "1"
    try:
        from tasks.mujoco.dataset import make_dataset

        make_dataset("ant", "smoke", root=str(data), overrides=TINY_ANT, progress=False, log=lambda s: None)
        yield data
    finally:
        if old is None:
            os.environ.pop("FSB_OFFLINE", None)
        else:
            os.environ["FSB_OFFLINE"] = old


def _fig24(tmp_path, data, *extra):
    return compose(["experiment=fig24_landscape", *paths_overrides(tmp_path), f"paths.data={data}", "profile.mujoco_context=16",
                    "task.val_fraction=0.34", "task.progress=false", *extra])


# ------------------------------------------------------------------------------------ end to end
def test_fig3_experiment_end_to_end(tmp_path):
    cfg = compose(["experiment=fig3_landscape", *paths_overrides(tmp_path), "models=[stu,transformer_moe]", "grid=2",
                   "steps=2", "batch_size=2", "task.seq_len=32"])
    assert cfg.kind == "landscape" and cfg.model_overrides.width == 32 and cfg.model_overrides.depth == 1
    rec = L.run(cfg)
    out = tmp_path / "res" / "fig3_landscape" / "smoke"
    rows = list(csv.DictReader(open(out / "landscape.csv")))
    assert len(rows) == 2 * 4
    assert {"model", "x", "y", "loss", "task_loss", "aux_loss", "hess_ratio", "hess_min", "hess_max"} <= set(rows[0])
    ratios = np.array([float(r["hess_ratio"]) for r in rows])
    assert np.all((ratios >= 0) & (ratios <= 1))
    for r in rows:  # the landscape's loss is the training objective: task loss + auxiliary loss
        assert float(r["loss"]) == pytest.approx(float(r["task_loss"]) + float(r["aux_loss"]), rel=1e-5)
        assert (float(r["aux_loss"]) > 0) == (r["model"] == "transformer_moe")
    plots = tmp_path / "plots" / "fig3_landscape" / "smoke"
    assert (plots / "fig3_landscape.png").stat().st_size > 5000
    assert (plots / "fig13_hessian.png").stat().st_size > 5000
    saved = json.loads((out / "record.json").read_text())
    assert saved["git_commit"] and saved["versions"]["torch"] and saved["device"]["device"] == "cpu"
    assert saved["backends"]["stu"] and saved["wall_time_s"] > 0
    assert saved["settings"]["optimizer"]["name"] == "rmsprop"  # the LDS task's default, as the runs
    assert saved["settings"]["steps"] == 2 and rec["summary"]["stu"]["mean_hess_ratio"] is not None


def test_fig24_experiment_end_to_end_on_tiny_ant_data(tiny_ant_data, tmp_path):
    """fig24_landscape composes the Ant task and the robotics models at width 128 / depth 4 and writes
    the Hessian-ratio heat maps under its own names (not Figure 3's)."""
    full = _fig24(tmp_path, tiny_ant_data)
    assert list(full.models) == ["robotics_stu", "robotics_stu_t", "robotics_transformer", "robotics_mamba2"]
    assert full.model_overrides.width == 128 and full.model_overrides.depth == 4
    assert "mlp" not in full.model_overrides  # Figure 3's one-layer overrides do not leak in
    cfg = _fig24(tmp_path, tiny_ant_data, "models=[robotics_stu_t,robotics_transformer]", "grid=2", "steps=2",
                 "batch_size=2", "model_overrides.depth=1")  # one layer: the same code, a quarter of the time
    rec = L.run(cfg)
    assert set(rec["models"]) == {"robotics_stu_t", "robotics_transformer"}
    assert rec["settings"]["optimizer"]["name"] == "adamw"  # the MuJoCo task's default, as the runs
    plots = tmp_path / "plots" / "fig24_landscape" / "smoke"
    assert (plots / "fig24_hessian.png").stat().st_size > 5000
    assert (plots / "fig24_landscape.png").exists() and not (plots / "fig13_hessian.png").exists()
    out = tmp_path / "res" / "fig24_landscape" / "smoke"
    rows = list(csv.DictReader(open(out / "landscape.csv")))
    assert len(rows) == 2 * 4
    assert all(float(r["aux_loss"]) > 0 for r in rows if r["model"] == "robotics_transformer")
    assert json.loads((out / "record.json").read_text())["models"]["robotics_transformer"]["params"] > 0


def test_moe_auxiliary_loss_is_in_figure24_loss(tiny_ant_data, tmp_path):
    """At the trained point the landscape's loss is task.loss + model.aux_loss computed independently,
    and it differs from the task loss alone by the (positive) auxiliary loss of the MoE model."""
    cfg = _fig24(tmp_path, tiny_ant_data, "models=[robotics_transformer]", "grid=3", "steps=2", "batch_size=2",
                 "hessian=false", "model_overrides.depth=2")
    spec = L.check(cfg)
    task = instantiate(cfg.task, _convert_="all")
    r = L.landscape_of("robotics_transformer", task, spec)
    assert all(a > 0 for a in r.train_aux)  # trained with the auxiliary loss too
    with torch.no_grad():
        out = r.model(r.batch.inputs)
        task_loss = float(task.loss(out, r.batch))
        aux = float(r.model.aux_loss)
    assert aux > 0
    assert r.centre["loss"] == pytest.approx(task_loss + aux, rel=1e-6)
    assert r.centre["task_loss"] == pytest.approx(task_loss, rel=1e-6)
    assert r.centre["loss"] - task_loss == pytest.approx(aux, rel=1e-4)
    assert r.centre["loss"] != pytest.approx(task_loss, rel=1e-9, abs=0)
    at_centre = next(row for row in r.rows if row["x"] == 0.0 and row["y"] == 0.0)  # grid 3 holds (0, 0)
    assert at_centre["loss"] == pytest.approx(task_loss + aux, rel=1e-6)


# --------------------------------------------------------------------------------------- Hessian
def test_hessian_when_an_moe_expert_gets_no_token():
    """Force every router never to pick expert 0 (a large negative logit): its weights take no part
    in the graph. The Hessian (and its gradient) must treat them as zeros instead of failing."""
    torch.manual_seed(0)
    task = RandomTask(8, d_in=3, d_out=2)
    model = models.build_model("robotics_transformer", d_in=3, d_out=2, seq_len=8, width=16, depth=1)
    moes = [m for m in model.modules() if isinstance(m, MoE)]
    assert moes
    for moe in moes:
        ban = torch.zeros(moe.num_experts)
        ban[0] = 1e4
        moe.router.register_forward_hook(lambda mod, inp, out, ban=ban: out - ban.to(out.dtype))
    batch = task.train_batch(0, 2, torch.Generator().manual_seed(0))
    params = [p for p in model.parameters() if p.requires_grad]
    unused = {id(p) for moe in moes for p in moe.experts[0].parameters()}
    total = model(batch.inputs).pow(2).mean() + model.aux_loss
    grads = torch.autograd.grad(total, params, allow_unused=True)
    assert all((g is None) == (id(p) in unused) for p, g in zip(params, grads))  # exactly expert 0 unused
    with pytest.raises(RuntimeError, match="not have been used in the graph"):  # the case of the issue
        torch.autograd.grad(model(batch.inputs).pow(2).mean() + model.aux_loss, params)
    gen = torch.Generator().manual_seed(1)
    d1, d2 = L.filter_normalised_direction(params, gen), L.filter_normalised_direction(params, gen)
    H = L.hessian_2d(model, params, task, batch, d1, d2)
    assert H.shape == (2, 2) and np.all(np.isfinite(H)) and np.allclose(H, H.T)
    assert 0 <= L.ratio(H)[0] <= 1


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
    assert np.allclose(H, np.array([[2.0, 0.5], [0.5, 4.0]]))


def test_directions_are_filter_normalised():
    w = torch.randn(4, 5)
    b = torch.randn(4)
    d = L.filter_normalised_direction([w, b], torch.Generator().manual_seed(0))
    assert torch.allclose(d[0].norm(dim=1), w.norm(dim=1))
    assert torch.all(d[1] == 0)


# ----------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize("override, message", [
    ("grid=0", "grid must be >= 2"),
    ("models=[stu,nope]", "valid models:"),
    ("dtype=float16", "valid dtypes:"),
    ("steps=0", "steps must be >= 1"),
    ("optimizer.name=lion", "valid optimizers:"),
    ("+model_overrides.nonsense=1", "nonsense"),
])
def test_bad_values_fail_before_any_file(tmp_path, override, message):
    cfg = compose(["experiment=fig3_landscape", *paths_overrides(tmp_path), override])
    with pytest.raises(ConfigError, match=message):
        L.run(cfg)
    assert not any(tmp_path.iterdir())


def test_not_a_landscape_experiment_names_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="experiment=fig24_landscape"):
        L.run(compose(paths_overrides(tmp_path)))


# ------------------------------------------------------------- Figure 12 (kind: filters, no training)
def test_fig12_filters_experiment_end_to_end(tmp_path):
    """fig12_filters writes the filters it draws (CSV equal to spectral_filters), a record with the
    eigen-equation residual, and the PNG, under <results>/fig12_filters/<profile>/; a bad variant
    names the valid ones before any file is written."""
    from benchmarks import filters
    from models.spectral import spectral_filters

    cfg = compose(["experiment=fig12_filters", *paths_overrides(tmp_path), "filters.seq_len=64", "filters.k=7"])
    assert cfg.kind == "filters" and cfg.filters.variant == "hankel"
    rec = filters.run(cfg)
    assert rec["eigen_residual_max"] < 1e-12 and rec["orthonormality_error_max"] < 1e-12
    out = tmp_path / "res" / "fig12_filters" / "smoke"
    with open(out / "filters.csv") as f:
        rows = list(csv.DictReader(f))
    phi = spectral_filters(64, 7)
    assert len(rows) == 64 and abs(float(rows[5]["phi_3"]) - float(phi[5, 2])) < 1e-15
    saved = json.loads((out / "record.json").read_text())
    assert saved["git_commit"] and saved["versions"]["torch"] and len(saved["eigenvalues"]) == 7
    assert (tmp_path / "plots" / "fig12_filters" / "smoke" / "fig12_spectral_filters.png").stat().st_size > 10_000
    bad = tmp_path / "bad"
    with pytest.raises(ConfigError, match="hankel_L"):
        filters.run(compose(["experiment=fig12_filters", *paths_overrides(bad), "filters.variant=hankle"]))
    with pytest.raises(ConfigError, match="filters.k must be <= filters.seq_len"):
        filters.run(compose(["experiment=fig12_filters", *paths_overrides(bad), "filters.seq_len=8"]))
    assert not bad.exists()
