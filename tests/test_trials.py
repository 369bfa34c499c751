"""Batched trials (benchmarks/trials.py): N seeds of a model trained as one vmapped computation give
the records and curves of N one-by-one runs; a killed batched run resumes (batched or one by one);
models that cannot be batched fall back and say why."""
from __future__ import annotations

import json
import math

import pytest
import torch

import models
from benchmarks import trials
from benchmarks.config import ConfigError, check_jobs, compose, sweep_params
from conftest import paths_overrides

TOKENS = ["task=induction_heads", "task.seq_len=16", "steps=6", "eval_every=2", "eval_size=16",
          "batch_size=4", "trials=3", "optimizer.grad_clip=0.5", "threads=1"]
LDS = ["task=lds", "task.seq_len=20", "task.d_hidden=8", "task.system_seed=${seed}", "steps=6", "eval_every=2", "eval_size=16",
       "batch_size=4", "trials=3", "threads=1"]


def _run(root, model, task_args, *extra):
    from benchmarks.train import run

    args = [f"model={model}", *task_args, *paths_overrides(root), *extra]
    task = next(a.split("=", 1)[1] for a in task_args if a.startswith("task="))
    run(compose(args), model, task, [a for a in args if not a.startswith("paths.")])


def _records(root) -> dict[int, dict]:
    out = {}
    for p in sorted((root / "runs").rglob("record.json")):
        rec = json.loads(p.read_text())
        rec["_curve"] = (p.parent / "curve.csv").read_text().splitlines()
        out[rec["seed"]] = rec
    return out


def _curve_values(rec) -> list[list[float]]:
    head, *rows = rec["_curve"]
    cols = head.split(",")
    keep = [i for i, c in enumerate(cols) if c != "wall_time_s"]
    return [[float(r.split(",")[i]) for i in keep] for r in rows]


def _assert_same(a: dict, b: dict, rtol=1e-4, atol=1e-5):
    assert a["config_fingerprint"] == b["config_fingerprint"] and a["status"] == b["status"] == "ok"
    for k, v in a["final_metrics"].items():
        assert math.isclose(v, b["final_metrics"][k], rel_tol=rtol, abs_tol=atol), (k, v, b["final_metrics"][k])
    ca, cb = _curve_values(a), _curve_values(b)
    assert len(ca) == len(cb) == 4
    for ra, rb in zip(ca, cb):
        assert ra[0] == rb[0]  # the step
        for x, y in zip(ra[1:], rb[1:]):
            assert math.isclose(x, y, rel_tol=rtol, abs_tol=atol), (ra, rb)


@pytest.mark.parametrize("model", models.available_models())
def test_batched_trials_equal_one_by_one_trials(tmp_path, model, one_thread):
    """Every registry model: three seeds in one run (batched where the model batches, with per-trial
    gradient clipping) against the same three seeds one by one."""
    _run(tmp_path / "b", model, TOKENS, "seed=0", "trial_batch=3", "batch_trials=true")
    for seed in range(3):
        _run(tmp_path / "o", model, TOKENS, f"seed={seed}")
    batched, single = _records(tmp_path / "b"), _records(tmp_path / "o")
    assert sorted(batched) == sorted(single) == [0, 1, 2]
    probe = models.build_model(model, vocab_size=12, seq_len=16)
    why = trials.why_not_batchable(probe)
    for seed in range(3):
        info = batched[seed]["trials"]
        assert info["seeds"] == [0, 1, 2]
        if why is None:
            assert info["mode"] == "batched", info
        else:  # the fallback is said, with its reason
            assert info["mode"] == "one-by-one" and "mixture of experts" in info["reason"]
        assert single[seed]["trials"]["mode"] == "one-by-one"
        _assert_same(batched[seed], single[seed])
    # the trials really differ (own initialisation and data), so equality above is per trial
    assert batched[0]["final_metrics"] != batched[1]["final_metrics"]


def test_each_batched_trial_gets_its_own_lds_system(tmp_path, one_thread):
    _run(tmp_path / "b", "stu_t", LDS, "seed=0", "trial_batch=3", "batch_trials=true")
    for seed in range(3):
        _run(tmp_path / "o", "stu_t", LDS, f"seed={seed}")
    batched, single = _records(tmp_path / "b"), _records(tmp_path / "o")
    assert [batched[s]["task_info"]["system_seed"] for s in range(3)] == [0, 1, 2]
    for seed in range(3):
        assert batched[seed]["trials"]["mode"] == "batched"
        _assert_same(batched[seed], single[seed])


@pytest.mark.parametrize("resume_with", ["true", "false"])
def test_a_killed_batched_run_resumes(tmp_path, monkeypatch, one_thread, resume_with):
    """Killed after its step-4 checkpoint, the batched run resumes from step 4 (batched, or one by
    one from the same per-trial checkpoints) and ends where an uninterrupted run ends."""
    from tasks.induction_heads import InductionHeads

    _run(tmp_path / "ref", "stu", TOKENS, "trial_batch=3", "batch_trials=true")
    original = InductionHeads.train_batch

    def killed_at_step_5(self, step, *a, **k):
        if step == 5:
            raise KeyboardInterrupt("killed")
        return original(self, step, *a, **k)

    monkeypatch.setattr(InductionHeads, "train_batch", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "k", "stu", TOKENS, "trial_batch=3", "batch_trials=true", "checkpoint_every=4")
    ckpts = sorted((tmp_path / "k").rglob("checkpoint.pt"))
    assert len(ckpts) == 3 and not list((tmp_path / "k").rglob("record.json"))
    assert {torch.load(c, weights_only=False)["step"] for c in ckpts} == {4}
    monkeypatch.setattr(InductionHeads, "train_batch", original)
    _run(tmp_path / "k", "stu", TOKENS, "trial_batch=3", f"batch_trials={resume_with}", "checkpoint_every=4")
    ref, resumed = _records(tmp_path / "ref"), _records(tmp_path / "k")
    assert not list((tmp_path / "k").rglob("checkpoint.pt"))
    for seed in range(3):
        _assert_same(ref[seed], resumed[seed])


def test_a_finished_trial_is_not_trained_again_in_a_batch(tmp_path, one_thread, capsys):
    _run(tmp_path, "stu", TOKENS, "seed=1")
    _run(tmp_path, "stu", TOKENS, "seed=0", "trial_batch=3", "batch_trials=true")
    err = capsys.readouterr().err
    assert err.count("[skip]") == 1 and "seed1" in err.split("[skip]")[1].splitlines()[0]
    recs = _records(tmp_path)
    assert recs[1]["trials"]["seeds"] == [1] and recs[0]["trials"]["batched_with"] == [0, 2]


def test_trial_batch_jobs_are_the_one_seed_jobs(tmp_path):
    """``seed=range(0,trials,trial_batch)`` checks the same per-seed runs (same folders) as one job
    per seed, and trial_batch never reaches past ``trials``."""
    base = ["experiment=fig2", "profile=smoke", "trials=5", *paths_overrides(tmp_path)]
    one = check_jobs(sweep_params(compose(base, return_hydra_config=True)), base)
    four = check_jobs(sweep_params(compose(base + ["trial_batch=4"], return_hydra_config=True)), base + ["trial_batch=4"])
    assert len(one) == len(four) == 6 * 5
    assert sorted(j["dir"] for j in one) == sorted(j["dir"] for j in four)


@pytest.mark.parametrize("bad, message", [("trial_batch=0", "trial_batch must be >= 1"),
                                          ("batch_trials=maybe", "batch_trials must be one of auto, true, false")])
def test_bad_trial_settings_fail_before_any_work(tmp_path, bad, message):
    from benchmarks.config import validate

    with pytest.raises(ConfigError, match=message):
        validate(compose(["task=lds", "model=stu", bad, *paths_overrides(tmp_path)]), "lds")
    assert not (tmp_path / "runs").exists()


def test_per_trial_clipping_is_torch_clipping_of_each_trial():
    torch.manual_seed(0)
    grads = [torch.randn(3, 4, 5) * 10, torch.randn(3, 7)]
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    norms = trials.clip_per_trial(params, 1.0)
    for i in range(3):
        own = [torch.zeros_like(g[i], requires_grad=True) for g in grads]
        for p, g in zip(own, grads):
            p.grad = g[i].clone()
        n = torch.nn.utils.clip_grad_norm_(own, 1.0)
        assert torch.allclose(norms[i], n, rtol=1e-6)
        for p, q in zip(own, params):
            assert torch.allclose(p.grad, q.grad[i], rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: batched trials on CUDA not exercised here")
@pytest.mark.parametrize("model", ["stu", "stu_t", "s4d", "mamba2", "transformer"])
def test_batched_trials_on_cuda_equal_one_by_one(tmp_path, model):
    """The same equality on a GPU (where batch_trials=auto batches), each path's own kernels."""
    from benchmarks.train import run

    def go(root, *extra):
        args = [f"model={model}", *TOKENS, f"paths.runs={root}", "progress=false", "device=cuda", *extra]
        run(compose(args), model, "induction_heads", [a for a in args if not a.startswith("paths.")])

    go(tmp_path / "b", "trial_batch=3", "batch_trials=auto")
    for seed in range(3):
        go(tmp_path / "o", f"seed={seed}")
    batched = {r["seed"]: r for r in map(lambda p: json.loads(p.read_text()), (tmp_path / "b").rglob("record.json"))}
    single = {r["seed"]: r for r in map(lambda p: json.loads(p.read_text()), (tmp_path / "o").rglob("record.json"))}
    for seed in range(3):
        assert batched[seed]["trials"]["mode"] == "batched"
        if model == "transformer":  # SDPA's fused CUDA kernels fail under vmap: the math backend ran
            assert "sdpa=math" in batched[seed]["trials"]["plain_paths"]
        for k, v in batched[seed]["final_metrics"].items():
            assert math.isclose(v, single[seed]["final_metrics"][k], rel_tol=1e-3, abs_tol=1e-4), (k, v)


def test_batched_trials_switch_the_optional_kernels_off_on_cuda_and_say_so(monkeypatch):
    """vmap cannot batch the optional kernels (custom autograd functions): on CUDA the batched
    computation runs the plain paths, restores the flags afterwards and names what it switched."""
    from models.mamba2 import Mamba2

    mods = [Mamba2(16, 32) for _ in range(2)]
    for m in mods:
        m.use_fast_path = True
    stack = trials.TrialStack(mods)
    seen = []

    def fake_vmap_forward():
        with stack.plain_kernels():
            seen.append(stack.shell.use_fast_path)

    fake_vmap_forward()  # on a CPU nothing is switched (the kernels never run there)
    assert seen == [True] and stack.plain_paths == []
    monkeypatch.setattr(stack, "on_cuda", lambda: True)
    fake_vmap_forward()
    assert seen == [True, False] and stack.shell.use_fast_path is True
    assert stack.plain_paths == ["Mamba2.use_fast_path=false"]
    fake_vmap_forward()
    assert stack.plain_paths == ["Mamba2.use_fast_path=false"]  # named once
