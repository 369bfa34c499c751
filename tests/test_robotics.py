"""Robotics experiments (issue 5): Table I configs, next-step / autoregressive evaluation, and a tiny
end-to-end ``make reproduce-table2``.

Quick tests use a tiny Ant dataset (6 trajectories x 40 steps, 128-step PPO agent, ~20 s once per
module) under a temporary ``FSB_DATA``; the hub is never contacted.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import models
from benchmarks import evaluation, robotics

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Our parameter counts for Ant-v1 (37 inputs, 29 outputs); the README's robotics table.
EXPECTED_PARAMS = {"robotics_stu": 541_853, "robotics_stu_t": 552_989, "robotics_transformer": 514_333,
                   "robotics_mamba2": 488_525}
TINY = {"n_traj": 6, "steps": 40, "shard_size": 3, "n_envs": 2, "seed": 0, "agent_timesteps": 128,
        "agent_seed": 0, "eval_episodes": 1}


def _doc_rows(name: str) -> list[str]:
    """Table rows of the README that name ``name``."""
    text = (ROOT / "README.md").read_text()
    return [line for line in text.splitlines() if f"`{name}`" in line and line.startswith("|")]


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_robotics_config_builds_with_documented_param_count(name):
    m = models.build_model(name, d_in=37, d_out=29, seq_len=64)
    n = models.count_params(m)
    assert n == EXPECTED_PARAMS[name]
    rows = _doc_rows(name)
    assert rows, f"no row for {name} in the robotics parameter table"
    assert any(f"{n:,}" in r for r in rows), f"no documented row for {name} gives {n:,}: {rows}"
    out = m(torch.randn(2, 64, 37))
    assert out.shape == (2, 64, 29) and torch.isfinite(out).all()


def test_table1_paper_values_are_the_transcribed_ones():
    paper = robotics.paper_tables()
    assert paper["table2_ant_val_loss"] == {"STU": 0.0181, "STU-T": 0.0092, "Transformer": 0.0237, "Mamba-2": 0.0139}
    assert [paper["table1_ant_models"][k]["params_m"] for k in ("STU", "STU-T", "Transformer", "Mamba-2")] == \
        [0.55, 0.47, 0.51, 0.51]
    shared = ROOT.parent / "shared" / "paper" / "paper-tables.yaml"
    if shared.exists():  # the in-repo copy says the same as the shared transcription
        import yaml
        assert yaml.safe_load(shared.read_text()) == paper


# --------------------------------------------------------------------------- prediction evaluation
class _FakeTask:
    """Validation trajectories with the task's normalisation interface (identity normalisation)."""

    def __init__(self, states, actions, context):
        self.states, self.actions, self.context = states, actions, context

    def val_trajectories(self):
        return {"states": self.states.copy(), "actions": self.actions.copy(), "rewards": None,
                "seeds": np.arange(len(self.states))}

    normalize_states = normalize_actions = denormalize_states = staticmethod(
        lambda a, split=None: np.asarray(a, np.float32))

    def paper_scale(self):
        return torch.ones(self.states.shape[-1])


Persistence = evaluation.Persistence  # predicts zero change: x^_{t+1} = x_t


class Zeros(torch.nn.Module):
    def __init__(self, dx):
        super().__init__()
        self.dx = dx

    def forward(self, inp):
        return torch.zeros(*inp.shape[:-1], self.dx)


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    pytest.importorskip("mujoco", reason="needs the [mujoco] extra")
    pytest.importorskip("seals", reason="needs the [mujoco] extra")
    data = tmp_path_factory.mktemp("data")
    old = {k: os.environ.get(k) for k in ("FSB_DATA", "FSB_OFFLINE")}
    os.environ.update(FSB_DATA=str(data), FSB_OFFLINE="1")
    try:
        from tasks.mujoco.dataset import make_dataset
        from tasks.mujoco.task import MujocoTask

        make_dataset("ant", "smoke", overrides=TINY, progress=False, log=lambda s: None)
        task = MujocoTask(env="ant", data_profile="smoke", context=8, val_fraction=0.34, progress=False)
        yield task, data
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_autoregressive_feeds_predictions_back_on_real_data(tiny_task):
    task, _ = tiny_task
    dx = task.d_out
    P = 20
    out = evaluation.prediction_losses(Persistence(dx), task, P)
    traj = task.val_trajectories()
    t0 = int(out["t0"])
    assert t0 == task.context - 1 and out["loss_next"].shape == (len(traj["states"]), P)
    # next-step: the window ends at the true x_t, so "zero change" predicts x_t
    assert np.allclose(out["pred_next"], traj["states"][:, t0: t0 + P], atol=1e-4)
    # autoregressive: its own predictions come back, so it stays at x_t0 for all 20 steps
    assert np.allclose(out["pred_ar"], np.repeat(traj["states"][:, t0: t0 + 1], P, axis=1), atol=1e-4)
    assert not np.isclose(out["loss_ar"].mean(), out["loss_next"].mean(), rtol=1e-3), \
        "a zero-change model has the same next-step and autoregressive loss: predictions are not fed back"
    assert np.allclose(out["loss_ar"][:, 0], out["loss_next"][:, 0])  # the first prediction sees the same window
    # a model whose output ignores its inputs (all zeros) cannot tell the two apart
    z = evaluation.prediction_losses(Zeros(dx), task, P)
    assert np.allclose(z["loss_ar"], z["loss_next"])


def test_predictions_in_the_validation_units_and_the_paper_unit(tiny_task):
    """The evaluation gives the model the validation trajectories in the units of the validation loss
    (under the authors' per-split normalisation: the validation split's own statistics) and scores
    each step in the paper's unit (MSE per feature there) beside the suite's 1/2 ||.||^2."""
    from tasks.mujoco.task import MujocoTask

    task, _ = tiny_task
    dx, P = task.d_out, 12
    # ours (training statistics): the paper's unit is the error rescaled to the validation split's own units
    out = evaluation.prediction_losses(Persistence(dx), task, P)
    traj = task.val_trajectories()
    t0 = int(out["t0"])
    den = task.split_stats["val"]["state_den"]
    diff = (traj["states"][:, t0: t0 + P] - traj["states"][:, t0 + 1: t0 + 1 + P]) / den
    assert np.allclose(out["mse_next"], (diff ** 2).mean(-1), rtol=1e-4, atol=1e-7)
    diff_ours = (traj["states"][:, t0: t0 + P] - traj["states"][:, t0 + 1: t0 + 1 + P]) / task.stats["state_std"]
    assert np.allclose(out["loss_next"], 0.5 * (diff_ours ** 2).sum(-1), rtol=1e-4, atol=1e-7)
    # the authors' per-split normalisation: inputs in the validation split's units, paper unit = 2 loss / d
    split = MujocoTask(env="ant", data_profile="smoke", context=8, val_fraction=0.34, progress=False,
                       normalisation="per_split")  # the data of tiny_task (its FSB_DATA)
    seen = []

    class Spy(Persistence):
        def forward(self, inp):
            seen.append(inp[..., :dx].clone())
            return super().forward(inp)

    o2 = evaluation.prediction_losses(Spy(dx), split, P)
    st = split.split_stats["val"]
    first = seen[0].numpy()  # the first next-step batch: windows of ground-truth states in the model's units
    raw = split.val_trajectories()["states"]
    expect = ((raw - st["state_mean"]) / st["state_den"]).astype(np.float32)
    assert any(np.allclose(first[i], expect[j, : first.shape[1]], atol=1e-5)
               for i in range(min(3, len(first))) for j in range(len(expect))), \
        "the validation trajectories are not in the validation split's own units"
    assert np.allclose(o2["mse_next"], 2 * o2["loss_next"] / dx, rtol=1e-5)
    assert np.allclose(o2["mse_next"], (diff ** 2).mean(-1), rtol=1e-4, atol=1e-7)  # same unit, either regime
    assert np.allclose(split.denormalize_states(split.normalize_states(raw, split="val"), split="val"), raw,
                       rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="valid splits"):
        split.normalize_states(raw, split="test")


def test_autoregressive_never_looks_at_future_ground_truth():
    torch.manual_seed(0)
    n, T, dx, du, L, P = 3, 60, 29, 8, 16, 30
    states = np.random.default_rng(0).standard_normal((n, T + 1, dx)).astype(np.float32)
    actions = np.random.default_rng(1).standard_normal((n, T, du)).astype(np.float32)
    model = models.build_model("robotics_stu", d_in=dx + du, d_out=dx, seq_len=L, width=32, depth=2).eval()
    base = evaluation.prediction_losses(model, _FakeTask(states, actions, L), P)
    t0 = int(base["t0"])
    assert t0 == L - 1
    # perturbing every ground-truth state after t0 changes no autoregressive prediction (and does
    # change next-step predictions, which are allowed to see them)
    s2 = states.copy()
    s2[:, t0 + 1:] += 5.0
    pert = evaluation.prediction_losses(model, _FakeTask(s2, actions, L), P)
    assert np.array_equal(pert["pred_ar"], base["pred_ar"])
    assert not np.allclose(pert["pred_next"][:, 1:], base["pred_next"][:, 1:])
    # perturbing the inputs at time t0+k+1 and later leaves predictions 0..k unchanged (causal)
    k = 10
    a2 = actions.copy()
    a2[:, t0 + k + 1:] += 5.0
    s3 = states.copy()
    s3[:, t0 + k + 1:] += 5.0
    late = evaluation.prediction_losses(model, _FakeTask(s3, a2, L), P)
    for key in ("pred_ar", "pred_next"):
        assert np.allclose(late[key][:, : k + 1], base[key][:, : k + 1], atol=1e-5), key
        assert not np.allclose(late[key][:, k + 1:], base[key][:, k + 1:]), key
    # the batched next-step windows equal a direct call on the ground-truth window
    t = t0 + 7
    x = torch.from_numpy(np.concatenate([states[:, t - L + 1: t + 1], actions[:, t - L + 1: t + 1]], -1))
    with torch.no_grad():
        direct = model(x)[:, -1].numpy()
    assert np.allclose(base["pred_next"][:, 7], direct, atol=1e-5)


def test_predictions_do_not_depend_on_the_evaluation_batch_size():
    """The evaluation forwards its windows EVAL_BATCH at a time (faster on a CPU than one big call):
    every window's prediction is the same at any batch size, for both kinds of prediction."""
    n, T, dx, du, L, P = 5, 50, 6, 3, 20, 20
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((n, T, dx)).astype(np.float32))
    u = torch.from_numpy(rng.standard_normal((n, T, du)).astype(np.float32))
    model = models.build_model("robotics_stu", d_in=dx + du, d_out=dx, seq_len=L, width=16, depth=2).eval()
    t0 = L - 1
    ns = [evaluation.next_step_predictions(model, x, u, t0, P, L, batch_size=b) for b in (1, 3, 1000)]
    ar = [evaluation.autoregressive_predictions(model, x[:, : t0 + 1], u, P, L, batch_size=b) for b in (1, 2, 1000)]
    for got in (ns, ar):
        assert got[0].shape == (n, P, dx)
        for other in got[1:]:
            torch.testing.assert_close(other, got[0], rtol=1e-5, atol=1e-6)


def test_short_windows_when_context_exceeds_history():
    n, T, dx, du, L, P = 2, 30, 4, 2, 32, 25
    rng = np.random.default_rng(2)
    states = rng.standard_normal((n, T + 1, dx)).astype(np.float32)
    actions = rng.standard_normal((n, T, du)).astype(np.float32)
    out = evaluation.prediction_losses(Persistence(dx), _FakeTask(states, actions, L), P)
    assert int(out["t0"]) == T - P  # context longer than the trajectory allows: start at T - P
    assert np.allclose(out["pred_next"], states[:, T - P: T])
    with pytest.raises(ValueError):
        evaluation.prediction_losses(Persistence(dx), _FakeTask(states, actions, L), T + 1)


# ------------------------------------------------------------------------ tiny make reproduce-table2
def _make_table2(tmp_path, data_dir, extra=(), args=""):
    env = dict(os.environ, FSB_RUNS=str(tmp_path / "runs"), FSB_DATA=str(data_dir), FSB_OFFLINE="1",
               FSB_RESULTS=str(tmp_path / "results"), FSB_PLOTS=str(tmp_path / "plots"), PYTHONPATH=str(ROOT))
    sizes = " ".join(f"profile.data.mujoco.{k}={v}" for k, v in TINY.items())
    cmd = ["make", "-C", str(ROOT), "reproduce-table2", "PROFILE=smoke", "STAMP=", f"PY={sys.executable}",
           f"ARGS=profile.mujoco_context=16 steps=3 batch_size=4 eval_every=2 task.val_fraction=0.34 "
           f"profile.robotics_eval.predictions=20 {sizes} {args}", *extra]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"make failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_reproduce_table2_on_tiny_data(tmp_path, tiny_task):
    _, data_dir = tiny_task
    _make_table2(tmp_path, data_dir)
    out = tmp_path / "results" / "table2" / "smoke"
    md = (out / "table.md").read_text()
    rows = [line for line in md.splitlines() if re.match(r"\| (STU|STU-T|Transformer|Mamba-2) +\|", line)]
    assert len(rows) == 4, md
    assert "Validation loss (paper, reference)" in md
    for lab, v in {"STU": "0.0181", "STU-T": "0.0092", "Transformer": "0.0237", "Mamba-2": "0.0139"}.items():
        row = [r for r in rows if re.match(rf"\| {re.escape(lab)} +\|", r)][0]
        assert v in row
        assert "no run" not in row and "n/a" not in row
    assert "No-change baseline" in md
    assert "Profile: **smoke**" in md and "Commit(s):" in md and "Device(s):" in md
    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and "0.0092" in tex
    for name in ("table2", "nextstep", "autoregressive", "fig22", "fig23"):
        assert (tmp_path / "plots" / "table2" / "smoke" / f"{name}.png").stat().st_size > 10_000, name
    import pandas as pd
    pred = pd.read_csv(out / "predictions.csv")
    assert set(pred["model"]) == set(robotics.ROBOTICS_MODELS) and pred["k"].max() == 20
    # the prediction columns in the paper's unit (MSE per feature) beside the suite's
    assert "Next-step MSE per feature, mean of 20 steps (ours, the paper's unit)" in md
    assert pred["mse_next"].notna().all() and (pred["mse_next"] > 0).all() and (pred["mse_ar"] > 0).all()
    runs = sorted((tmp_path / "runs").rglob("record.json"))
    assert len(runs) == 4 and all((r.parent / "model.pt").exists() for r in runs)
    assert all(list(r.parent.glob("evaluation_P20_*.npz")) for r in runs), "evaluations are saved beside the runs"
    # a second call trains nothing and gives the same table
    p = _make_table2(tmp_path, data_dir)
    assert p.stderr.count("[skip]") == 4 and (out / "table.md").read_text().split("Runs:")[0] == md.split("Runs:")[0]
    # report_only=true: the runs finished so far are reported, nothing is trained (a sweep cut off)
    gone = runs[0].parent
    shutil.rmtree(gone)
    shutil.rmtree(tmp_path / "results")  # else the committed-results restore would write the run back
    p = _make_table2(tmp_path, data_dir, args="report_only=true")
    assert "reporting the 3 of 4 run(s) finished so far" in p.stderr and not gone.exists()
    assert "[skip]" not in p.stderr and "Launching" not in p.stderr
    md3 = (out / "table.md").read_text()
    rows3 = [line for line in md3.splitlines() if re.match(r"\| (STU|STU-T|Transformer|Mamba-2) +\|", line)]
    assert len(rows3) == 4 and sum("no run" in r for r in rows3) == 1, md3


def test_data_making_does_not_move_the_training_rng(tiny_task, tmp_path):
    """A task that repairs its data in-process leaves torch's global RNG where it was."""
    import shutil as sh

    from tasks.mujoco.task import MujocoTask

    _, data_dir = tiny_task
    copy = tmp_path / "data"
    sh.copytree(data_dir, copy)
    shard = next((copy / "mujoco" / "ant" / "smoke").glob("shard_*.npz"))
    shard.unlink()  # the task must make this shard again (PPO rollouts in this process)
    torch.manual_seed(0)
    MujocoTask(env="ant", data_profile="smoke", context=8, val_fraction=0.34, data_dir=str(copy), progress=False)
    assert shard.exists()
    a = torch.rand(4)
    torch.manual_seed(0)
    MujocoTask(env="ant", data_profile="smoke", context=8, val_fraction=0.34, data_dir=str(copy), progress=False)
    assert torch.equal(a, torch.rand(4))
