"""THE timing of train steps (benchmarks/timing.py): Table I end to end at a tiny size, its optimizer
is the runs', and every timed or trained path of the suite goes through benchmarks.loop.train_step.
No timing target is asserted anywhere."""
from __future__ import annotations

import json
import re

import pytest
from conftest import paths_overrides
import torch

import models
from benchmarks import landscape, loop, speed, timing
from benchmarks.config import ConfigError, compose, settings
from tasks.base import RandomTask
from tasks.mujoco.task import MujocoTask

TABLE1 = ["robotics_stu", "robotics_stu_t", "robotics_transformer", "robotics_mamba2"]


pytestmark = pytest.mark.usefixtures("one_thread")




def _table1(tmp_path, *extra):
    return compose(["experiment=table1_timing", *paths_overrides(tmp_path), "profile.mujoco_context=16",
                    "profile.batch_size.mujoco_ant=2", "timing.warmup=1", "timing.repeats=1", *extra])


def test_time_train_steps_reports_every_step():
    torch.manual_seed(0)
    task = RandomTask(8, d_in=3, d_out=2)
    model = models.build_model("transformer_moe", d_in=3, d_out=2, seq_len=8, width=16, depth=1)
    r = timing.time_train_steps(model, task, 2, {"name": "adamw", "lr": 1e-3}, "cpu", warmup=2, repeats=3,
                                memory=True)
    assert r["repeats"] == 3 and len(r["times_ms"]) == 3 and r["timer"] == "perf_counter"
    assert r["time_min_ms"] <= r["time_ms"] and r["first_call_ms"] > 0
    assert r["not_applied"] == 0 and r["last_aux"] > 0  # the MoE auxiliary loss is in the timed step
    assert r["saved_mb"] > 0 and r["peak_mem_mb"] is None  # no CUDA peak on a CPU
    assert r["optimizer"]["class"] == "AdamW" and r["params"] == models.count_params(model)


def test_table1_end_to_end_with_the_runs_optimizer(tmp_path, monkeypatch):
    """Table I at a tiny size writes its table, raw timings, record and plot; the optimizer of every
    timed model is loop.make_optimizer of the MuJoCo task's default optimizer (the runs' parameter
    groups: no weight decay on 1-D weights), not AdamW(model.parameters()) with torch's default 0.01."""
    built = []
    real = loop.make_optimizer

    def capture(model, spec):
        opt = real(model, spec)
        built.append((model, spec, opt))
        return opt

    monkeypatch.setattr(loop, "make_optimizer", capture)
    cfg = _table1(tmp_path)
    assert list(cfg.models) == TABLE1
    rec = timing.run(cfg)

    assert [m.registry_name for m, _, _ in built] == TABLE1
    expected_spec = settings(cfg, "mujoco_ant")["optimizer"]
    assert rec["optimizer"] == expected_spec and expected_spec["name"] == MujocoTask.default_optimizer["name"]
    for model, spec, opt in built:
        assert spec == expected_spec
        ref = real(model, dict(MujocoTask.default_optimizer))
        assert type(opt) is type(ref) is torch.optim.AdamW
        assert len(opt.param_groups) == len(ref.param_groups) >= 2
        for g, h in zip(opt.param_groups, ref.param_groups):
            assert [id(p) for p in g["params"]] == [id(p) for p in h["params"]]
            assert g["weight_decay"] == h["weight_decay"] and g["weight_decay"] != 0.01
            assert g["lr"] == h["lr"] == MujocoTask.default_optimizer["lr"]
        one_d = [g for g in opt.param_groups if all(p.dim() < 2 for p in g["params"])]
        assert one_d and all(g["weight_decay"] == 0.0 for g in one_d)

    out = tmp_path / "res" / "table1_timing" / "smoke"
    md = (out / "table.md").read_text()
    assert "Time/train step (paper, its GPU; reference)" in md and "11.4 ms" in md and "40.5 ms" in md
    assert all(re.search(rf"\| {re.escape(name)} +\|", md) for name in ("STU", "STU-T", "Transformer", "Mamba-2"))
    assert "541,853" in md  # our STU for Ant-v1 shapes (37 in, 29 out)
    assert "\\begin{tabular}" in (out / "table.tex").read_text()
    raw = json.loads((out / "timing.json").read_text())
    assert set(raw["steps_ms"]) == set(TABLE1) and all(len(v) == 1 for v in raw["steps_ms"].values())
    saved = json.loads((out / "record.json").read_text())
    assert saved["git_commit"] and saved["versions"]["torch"] and saved["device"]["device"] == "cpu"
    assert saved["shapes"] == {"d_in": 37, "d_out": 29, "seq_len": 16} and saved["batch_size"] == 2
    assert set(saved["backends"]) == set(TABLE1) and saved["wall_time_s"] > 0
    assert (tmp_path / "plots" / "table1_timing" / "smoke" / "table1_timing.png").stat().st_size > 5000


def test_every_trained_or_timed_path_calls_loop_train_step(tmp_path, monkeypatch):
    """The landscape's training, Table I and the speed benchmark's train section all step through
    benchmarks.loop.train_step (there is no other training step)."""
    calls: dict[str, int] = {}
    who = {"now": ""}
    real = loop.train_step

    def counting(*args, **kwargs):
        calls[who["now"]] = calls.get(who["now"], 0) + 1
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", counting)

    who["now"] = "landscape"
    landscape.run(compose(["experiment=fig3_landscape", *paths_overrides(tmp_path), "models=[stu]", "grid=2", "steps=3",
                           "batch_size=2", "hessian=false", "task.seq_len=16"]))
    who["now"] = "table1"
    timing.run(_table1(tmp_path, "models=[robotics_transformer]", "timing.repeats=2"))
    who["now"] = "speed"
    speed.run(compose(["experiment=speed", *paths_overrides(tmp_path), "profile.speed.warmup=1", "profile.speed.repeats=2",
                       "profile.speed.min_repeats=1", "profile.speed.train.settings_only=[fig2_lds]",
                       "profile.speed.train.models_only=[stu_fast]", "profile.speed.sweep.enabled=false",
                       "profile.speed.train.settings.fig2_lds.batch=2", "profile.speed.train.settings.fig2_lds.seq_len=16"]))
    assert calls["landscape"] == 3  # one per training step
    assert calls["table1"] >= 1 + 2  # warm-up + timed steps
    assert calls["speed"] >= 1 + 1


@pytest.mark.parametrize("override, message", [
    ("timing.repeats=0", "timing.repeats must be >= 1"),
    ("models=[robotics_stu,nope]", "valid models:"),
    ("dtype=float16", "valid dtypes:"),
    ("batch_size=0", "batch_size must be >= 1"),
    ("profile.mujoco_context=8", "robotics_stu"),  # 16 filters do not fit a window of 8
])
def test_table1_bad_values_fail_before_any_file(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        timing.run(_table1(tmp_path, override))
    assert not (tmp_path / "res").exists() and not (tmp_path / "plots").exists()


def test_not_a_timing_experiment_names_the_valid_one(tmp_path):
    with pytest.raises(ConfigError, match="experiment=table1_timing"):
        timing.run(compose(["experiment=fig3_landscape", *paths_overrides(tmp_path)]))
