"""Training regimes of the robotics tasks (issue 11): ``regime=ours`` and ``regime=authors`` differ
only where ``conf/regime/*.yaml`` say, the paper's unit (``paper_mse``) is the authors' mean squared
error per feature, the authors' data handling (first windows, shuffled epochs, per-split
normalisation, raw-unit noise on training and validation inputs), early stopping, the STU block skip,
and the ablation models' parameter counts against Tables VIII-X.

The task tests run on a synthetic dataset put in place of the MuJoCo shards (no MuJoCo needed).
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import models
from tasks.base import Batch

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")
N_TRAJ, T, DX, DU = 12, 40, 29, 8  # Ant's dimensions; 12 trajectories of 40 steps
ROBOTICS = ["robotics_stu", "robotics_stu_t", "robotics_transformer", "robotics_mamba2"]


# ------------------------------------------------------------------------------------ fixtures
def _synthetic_data(seed: int = 0) -> dict[str, np.ndarray]:
    """States with very different scales and offsets per feature (so normalisations differ)."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(-3, 2, DX))
    offset = rng.normal(0, 5, DX)
    states = offset + scale * np.cumsum(rng.normal(0, 0.3, (N_TRAJ, T + 1, DX)), axis=1)
    actions = rng.uniform(-1, 1, (N_TRAJ, T, DU)) * np.linspace(0.2, 3, DU)
    return {"states": states.astype(np.float32), "actions": actions.astype(np.float32),
            "rewards": rng.normal(size=(N_TRAJ, T)).astype(np.float32), "seeds": np.arange(N_TRAJ)}


@pytest.fixture
def fake_data(monkeypatch):
    """MujocoTask reads the synthetic dataset instead of shards (manifest, checks, statistics)."""
    import tasks.mujoco.task as mt
    from tasks.mujoco.dataset import norm_stats, split_indices

    data = _synthetic_data()
    man = {"complete": True, "config": {}, "n_traj": N_TRAJ, "steps": T, "env_id": "seals/Ant-v1",
           "seeds": [0, N_TRAJ], "agent": {"source": "synthetic"}, "data_returns": {"mean": 0.0}}
    monkeypatch.setattr(mt, "read_manifest", lambda ddir: man)
    monkeypatch.setattr(mt, "verify_shards", lambda ddir, m: [])
    monkeypatch.setattr(mt, "load_dataset", lambda *a, **k: ({k2: v.copy() for k2, v in data.items()}, man))

    def stats(env, profile, d, vf, root=None):
        tr, _ = split_indices(len(d["states"]), vf)
        return norm_stats(d["states"][tr], d["actions"][tr])

    monkeypatch.setattr(mt, "train_norm_stats", stats)
    return data


def _task(**kw):
    from tasks.mujoco.task import MujocoTask

    args = dict(env="ant", data_profile="smoke", context=16, val_fraction=0.25, progress=False)
    args.update(kw)
    return MujocoTask(**args)


AUTHORS = dict(loss="mse", windows="first", sampling="epoch", eval_windows="first", normalisation="per_split",
               noise_units="raw", noise_on="train_val")


def _authors_split_stats(states: np.ndarray):
    """The authors' loader, written out: mean/std over [inputs x_0..x_{T-1}; targets x_1..x_T] of the
    split, per feature (population std), the std plus 1e-5 in the denominator."""
    cat = np.concatenate([states[:, :-1], states[:, 1:]], axis=0).reshape(-1, states.shape[-1]).astype(np.float64)
    return cat.mean(0), cat.std(0) + 1e-5


# --------------------------------------------------------------------------- configs: the regimes
def _resolved(overrides: list[str]) -> dict:
    from benchmarks.config import identity

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    return identity(cfg, choices["model"], choices["task"], overrides)["spec"]


def _leaves(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _declared(regime_file: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "regime" / f"{regime_file}.yaml").read_text())["regime"]


@pytest.mark.parametrize("model", ROBOTICS)
def test_regimes_differ_only_where_their_configs_say(model, fake_data):
    """Every field of (model, task, training settings) that differs between regime=ours and
    regime=authors is one that conf/regime/authors.yaml sets to another value than ours.yaml (the
    steps and evaluation cadence follow from its epochs / batch / early stopping)."""
    base = ["experiment=table2", f"model={model}", "profile=smoke"]
    ours = _leaves(_resolved(base + ["regime=ours"]))
    auth = _leaves(_resolved(base + ["regime=authors"]))
    differ = {k for k in set(ours) | set(auth) if ours.get(k) != auth.get(k)}
    a, o = _declared("authors"), _declared("ours")
    expected = {f"task.{k}" for k, v in a["task"].items() if o["task"][k] != v}
    expected |= {"model.global_skip"} if a["model"]["global_skip"] != o["model"]["global_skip"] else set()
    if "stu" in model.replace("robotics_", "") and a["model"]["stu_block_skip"] != o["model"]["stu_block_skip"]:
        expected.add("model.block_skip")
    expected |= {f"settings.{k}" for k in _leaves(a["settings"])}
    expected |= {"settings.steps", "settings.eval_every"}  # from epochs x batches and early_stopping.evals
    expected = {k for k in expected if ours.get(k) != auth.get(k)}
    assert differ == expected
    # what the authors' file says is what the run gets
    assert auth["settings.optimizer.lr"] == 1.8e-3 and auth["settings.batch_size"] == 2
    assert auth["task.loss"] == "mse" and auth["task.normalisation"] == "per_split"


def test_regime_leaves_other_tasks_alone():
    """A synthetic task's run is the same run under either regime (same spec, same fingerprint)."""
    for exp, model, task in [("fig2", "stu", "lds"), ("fig4", "stu_t", "induction_heads")]:
        base = [f"experiment={exp}", f"model={model}", "profile=paper", f"task={task}"]
        assert _resolved(base + ["regime=ours"]) == _resolved(base + ["regime=authors"])


def test_profiles_pick_their_regime():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        assert compose("train", overrides=["profile=smoke"]).regime.name == "ours"
        assert compose("train", overrides=["profile=paper"]).regime.name == "authors"
        assert compose("train", overrides=["profile=paper", "regime=ours"]).regime.name == "ours"


def test_ours_keeps_the_committed_run_folders():
    """Fields added for the regimes are left out of the fingerprint at their old values: the committed
    smoke robotics runs are found again (not retrained)."""
    from benchmarks.config import identity

    path = ROOT / "results" / "table2" / "smoke" / "records.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert recs
    for r in recs:
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose("train", overrides=["experiment=table2", "profile=smoke", f"model={r['model']}",
                                              f"seed={r['seed']}"])
        ident = identity(cfg, r["model"], "mujoco_ant", r["overrides"])
        assert ident["fingerprint"] == r["config_fingerprint"], r["model"]


def test_unknown_regime_option_is_refused_naming_the_choices(fake_data):
    with pytest.raises(ValueError, match="valid: random, first"):
        _task(windows="middle")
    with pytest.raises(ValueError, match="valid: half_sq, mse"):
        _task(loss="l1")


# ----------------------------------------------------------------------------- the paper's unit
def test_paper_mse_is_the_authors_per_feature_mse(fake_data):
    """Under our normalisation, ``paper_mse`` equals the mean squared error per feature of the same
    predictions in the authors' units (validation split normalised by its own statistics)."""
    task = _task()
    batches = list(task.val_batches(64))
    g = torch.Generator().manual_seed(1)
    for b in batches:
        out = b.targets + 0.3 * torch.randn(b.targets.shape, generator=g)
        m = task.metrics(out, b)
        # independently: to raw units with our (training) statistics, then the authors' val normalisation
        xm, xs = np.asarray(task.stats["state_mean"]), np.asarray(task.stats["state_std"])
        raw_err = (out - b.targets).numpy().astype(np.float64) * xs
        _, den = _authors_split_stats(fake_data["states"][task.val_idx].astype(np.float64))
        expect = ((raw_err / den)[b.mask.numpy()] ** 2).mean()
        assert m["paper_mse"] == pytest.approx(expect, rel=1e-5)
        sq = ((out - b.targets)[b.mask] ** 2).double()
        assert m["mse_per_feature"] == pytest.approx(float(sq.mean()), rel=1e-5)
        assert m["half_sq"] == pytest.approx(float(0.5 * sq.sum(-1).mean()), rel=1e-5)
        assert m["loss"] == m["half_sq"]
        assert not math.isclose(m["paper_mse"], m["mse_per_feature"], rel_tol=1e-3)


def test_per_split_normalisation_is_the_authors_loader(fake_data):
    task = _task(**AUTHORS)
    for idx, (x, u) in ((task.train_idx, (task._x_train, task._u_train)), (task.val_idx, (task._x_val, task._u_val))):
        mean, den = _authors_split_stats(fake_data["states"][idx].astype(np.float64))
        expect = (fake_data["states"][idx] - mean) / den
        assert np.allclose(x.numpy(), expect, atol=1e-4)
        acts = fake_data["actions"][idx].reshape(-1, DU).astype(np.float64)
        assert np.allclose(u.numpy(), (fake_data["actions"][idx] - acts.mean(0)) / (acts.std(0) + 1e-5), atol=1e-4)
    b = next(task.val_batches(64))
    out = b.targets + 0.1
    m = task.metrics(out, b)
    assert m["paper_mse"] == pytest.approx(m["mse_per_feature"], rel=1e-6) == pytest.approx(0.01, rel=1e-4)
    assert m["loss"] == m["mse_per_feature"]  # loss=mse: the training loss is the paper's unit
    assert float(task.loss(out, b)) == pytest.approx(0.01, rel=1e-4)


# ------------------------------------------------------------------------ the authors' data handling
def test_epoch_sampling_passes_over_every_training_trajectory_once(fake_data):
    task = _task(**AUTHORS)
    n_train, bs = len(task.train_idx), 2
    spe = task.steps_per_epoch(bs)
    assert spe == math.ceil(n_train / bs)
    gen = torch.Generator().manual_seed(7)
    seen = []
    for step in range(spe):
        b = task.train_batch(step, bs, gen)
        for row in b.targets:  # which trajectory: match the window against the first steps
            hits = [i for i in range(n_train) if torch.equal(row, task._x_train[i, 1:task.context + 1])]
            assert len(hits) == 1, "windows=first: each window is the first context steps of one trajectory"
            seen.append(hits[0])
    assert sorted(seen) == list(range(n_train))
    # a function of (seed, epoch) only: a resumed run continues the same pass; seeds and epochs differ
    assert torch.equal(task.epoch_order(0, 7), task.epoch_order(0, 7))
    assert not torch.equal(task.epoch_order(0, 7), task.epoch_order(1, 7))
    assert not torch.equal(task.epoch_order(0, 7), task.epoch_order(0, 8))


def test_first_eval_windows_score_the_first_steps_of_each_validation_trajectory(fake_data):
    task = _task(**AUTHORS)
    batches = list(task.val_batches(64))
    assert sum(int(b.mask.sum()) for b in batches) == len(task.val_idx) * task.context == task.n_val_positions()
    tiled = _task()
    assert sum(int(b.mask.sum()) for b in tiled.val_batches(64)) == len(tiled.val_idx) * T


def test_raw_noise_on_training_and_validation_inputs(fake_data):
    sigma, freq = 0.5, 0.5
    task = _task(**AUTHORS, noise_std=sigma, noise_freq=freq)
    # noise std in model units = sigma / the split's std (+ the expected noise variance in the statistics)
    den = np.concatenate([task.split_stats["train"]["state_den"], task.split_stats["train"]["action_den"]])
    assert np.allclose(task._noise["train"].numpy(), sigma / den, rtol=1e-5)
    b1, b2 = next(task.val_batches(64)), next(task.val_batches(64))
    assert torch.equal(b1.inputs, b2.inputs), "validation noise is drawn once"
    L = task.context
    diff = b1.inputs - torch.cat([task._x_val[:, :L], task._u_val[:, :L]], dim=-1)  # first windows, in order
    noisy_steps = (diff.abs().sum(-1) > 1e-4).float().mean()
    assert 0.3 < float(noisy_steps) < 0.7, "about noise_freq of the validation steps are noised"
    assert torch.equal(b1.targets, task._x_val[:, 1:L + 1]), "targets are never noised"
    # the statistics include the noise's variance (half the state samples are inputs; all action samples)
    mean, den_clean = _authors_split_stats(fake_data["states"][task.train_idx].astype(np.float64))
    var = (den_clean - 1e-5) ** 2 + 0.5 * freq * sigma ** 2
    assert np.allclose(task.split_stats["train"]["state_den"], np.sqrt(var) + 1e-5)
    # ours: normalised units, training inputs only
    ours = _task(noise_std=sigma, noise_freq=freq)
    assert np.allclose(ours._noise["train"].numpy(), sigma)
    assert torch.equal(next(ours.val_batches(64)).inputs, next(_task().val_batches(64)).inputs)


# ------------------------------------------------------------------------------------ the runner
def _run(tmp_path, extra: list[str]):
    from benchmarks.train import run

    overrides = ["task=mujoco_ant", "model=robotics_stu", "profile=smoke", "regime=authors", "model.width=8",
                 "model.depth=1", "task.context=16", "task.val_fraction=0.25", "progress=false",
                 f"paths.runs={tmp_path}"] + extra
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    run(cfg, "robotics_stu", "mujoco_ant", overrides)
    recs = [json.loads(p.read_text()) for p in tmp_path.rglob("record.json")]
    assert len(recs) == 1
    return recs[0]


def test_authors_regime_run_one_epoch_and_early_stopping(tmp_path, fake_data, one_thread):
    rec = _run(tmp_path / "a", [])
    n_train = N_TRAJ - round(N_TRAJ * 0.25)
    assert rec["settings"]["steps"] == math.ceil(n_train / 2) == rec["steps_done"]
    assert rec["settings"]["epochs"] == 1 and rec["regime"] == "authors"
    assert rec["task_info"]["options"] == AUTHORS
    # a learning rate too small to improve: early stopping after `patience` evaluations without a new best
    rec = _run(tmp_path / "b", ["optimizer.lr=1e-12", "regime.settings.epochs=30",
                                "regime.settings.early_stopping.patience=3", "regime.settings.early_stopping.evals=30"])
    es = rec["early_stopping"]
    assert es["stopped_early_at_step"] is not None and rec["steps_done"] == es["stopped_early_at_step"]
    assert rec["steps_done"] < rec["settings"]["steps"]
    curve = (pathlib.Path(rec["run_dir"]) / "curve.csv").read_text().splitlines()
    header = curve[0].split(",")
    vals = [dict(zip(header, line.split(","))) for line in curve[1:]]
    best = min(vals, key=lambda r: float(r["eval_loss"]))
    assert int(best["step"]) == es["best_step"]
    assert rec["final_metrics"]["loss"] == pytest.approx(float(best["eval_loss"]), rel=1e-6), "restore_best"


def test_early_stopping_state_survives_a_resume(tmp_path, fake_data, one_thread, monkeypatch):
    from tasks.mujoco.task import MujocoTask

    extra = ["optimizer.lr=1e-3", "regime.settings.epochs=4", "regime.settings.early_stopping.evals=9",
             "checkpoint_every=4"]
    full = _run(tmp_path / "full", extra)
    original = MujocoTask.train_batch

    def crash(self, step, *a, **k):
        if step == 10:
            raise RuntimeError("simulated crash")
        return original(self, step, *a, **k)

    monkeypatch.setattr(MujocoTask, "train_batch", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path / "resumed", extra)
    ck = torch.load(next((tmp_path / "resumed").rglob("checkpoint.pt")), weights_only=False)
    assert ck["early_stopping"]["best_state"] is not None
    monkeypatch.setattr(MujocoTask, "train_batch", original)
    resumed = _run(tmp_path / "resumed", extra)
    assert resumed["final_metrics"] == pytest.approx(full["final_metrics"], rel=1e-5)
    assert resumed["early_stopping"]["best_step"] == full["early_stopping"]["best_step"]


# ---------------------------------------------------------------------------------------- models
def test_block_skip_adds_the_block_input_once_more():
    torch.manual_seed(0)
    m = models.build_model("robotics_stu", d_in=5, d_out=3, seq_len=16, width=8, depth=2, global_skip=False,
                           block_skip=True)
    x = torch.randn(2, 16, 5)
    h = m.embed(x)
    for blk in m.blocks:
        z = h
        h = h + blk.mixer(blk.norm1(h))
        h = h + blk.ff(blk.norm2(h))
        h = h + z
    assert torch.allclose(m(x), m.head(m.norm(h)), atol=1e-6)
    plain = models.build_model("robotics_stu", d_in=5, d_out=3, seq_len=16, width=8, depth=2, global_skip=False)
    plain.load_state_dict(m.state_dict())
    assert not torch.allclose(plain(x), m(x))


def _within_paper(ours: float, paper_m: float) -> bool:
    """Within 10% of the paper's count, or within the rounding of its two printed decimals."""
    return abs(ours / 1e6 - paper_m) <= max(0.10 * paper_m, 0.005)


@pytest.mark.parametrize("exp,key", [("table8", "table8_stu"), ("table9", "table9_stu_t"), ("table10", "table10_transformer")])
def test_ablation_models_have_the_papers_parameter_counts(exp, key):
    from benchmarks.robotics import paper_tables

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for prow in paper_tables()[key]:
            params_m, w, d = prow[0], prow[1], prow[2]
            cfg = compose("train", overrides=[f"experiment={exp}", "profile=smoke", f"model.width={w}",
                                              f"model.depth={d}"])
            mcfg = OmegaConf.to_container(cfg.model, resolve=True)
            assert mcfg["moe"] is False
            m = models._instantiate(mcfg, exp, d_in=37, d_out=29, seq_len=64)
            n = models.count_params(m)
            assert _within_paper(n, params_m), f"{exp} width {w} depth {d}: {n:,} vs paper {params_m}M"


def test_tables_print_the_paper_unit(tmp_path):
    """The robotics table's paper-unit column is the mean of the records' ``paper_mse``."""
    from benchmarks import robotics

    rec = {"status": "ok", "final_metrics": {"paper_mse": 0.0123, "mse_per_feature": 0.02, "half_sq": 0.3, "loss": 0.3}}
    assert robotics.paper_unit(rec) == (0.0123, True)
    assert robotics.suite_unit(rec) == 0.3
    old = {"status": "ok", "final_metrics": {"mse_per_feature": 0.02, "loss": 0.3}}
    assert robotics.paper_unit(old) == (0.02, False)
    assert math.isnan(robotics.paper_unit({"status": "diverged"})[0])
    checks = robotics.ordering_checks({"STU": 0.01, "STU-T": 0.02}, {"robotics_stu": 0.1, "robotics_stu_t": 0.3},
                                      {"robotics_stu": 0.05, "robotics_stu_t": 0.1})
    assert checks[0][1] is True and checks[0][2] == "yes"
    checks = robotics.ordering_checks({"STU": 0.01, "STU-T": 0.02}, {"robotics_stu": 0.1, "robotics_stu_t": 0.12},
                                      {"robotics_stu": 0.05, "robotics_stu_t": 0.1})
    assert checks[0][2] == "no"
