"""The language-model trainer (lm/train.py, lm/checkpoint.py, lm/sample.py, scripts/slurm_lm.sh).

Tiny sizes (a 2-layer Flash STU of width 32 on 32-token windows of a ~100-id corpus, 6 steps): the
training runs are subprocesses (``python -m lm.train`` and ``torchrun --nproc_per_node=2``, one
torch thread each), made once per module and compared:

(a) 2 processes equal 1 process (losses per step, validation, final weights) to float32 tolerance;
(b) a run stopped after a checkpoint and rerun ends equal to an uninterrupted one;
(c) a checkpoint saved by 2 processes resumes on 1;
(d) bad configs stop with ``error: ...`` before any work (no process group, no run folder).
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_group as _run_group, tiny_lm_shards
import torch

from lm import checkpoint as C
from lm import train as T

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
TORCHRUN = [PY, "-m", "torch.distributed.run"]

MODEL = ["model=flash_stu", "model.width=32", "model.depth=2"]
# 8 sequences of 32 tokens a step (micro batch 2: accumulation 4 on one process, 2 on two); lr high
# enough to move, and grad_clip low enough that clipping acts on every step
SMALL = ["seq_len=32", "global_batch_tokens=256", "micro_batch=2", "steps=6", "eval.every=3",
         "eval.sequences=6", "checkpoint.every=0", "optimizer.lr=3e-3", "optimizer.min_lr=3e-4",
         "grad_clip=0.05", "progress=false", "seed=1"]

WORDS = ("the king queen lord lady sword crown night day love death speak hear see come go thou thee "
         "my your his her our good ill fair foul sweet bitter heaven earth fire water blood gold old "
         "young war peace honour shame friend foe heart hand eye tongue time grief joy").split()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A tiny remapped shard folder (lm.data's format): ~100 ids, 2,048 validation tokens."""
    return tiny_lm_shards(tmp_path_factory.mktemp("lm_data"), WORDS, docs=40, sentences=60, max_words=12)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def run_group(cmd, timeout: float, **kw) -> subprocess.CompletedProcess:
    return _run_group(cmd, timeout, env=kw.pop("env", _env()), cwd=kw.pop("cwd", ROOT))


def launch(nproc: int, runs: pathlib.Path, data: pathlib.Path, *extra: str, check: bool = True):
    args = [*MODEL, *SMALL, f"paths.runs={runs}", f"data.root={data}", *extra]
    if nproc == 1:
        cmd = [PY, "-m", "lm.train", "threads=1", *args]
    else:
        cmd = [*TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "-m", "lm.train", *args]
    r = run_group(cmd, timeout=240)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def run_dir(runs: pathlib.Path, label: str) -> pathlib.Path:
    return runs / "lm" / "smoke" / "flash_stu" / label


def curve(folder: pathlib.Path) -> list[dict]:
    with open(folder / T.CURVE) as f:
        return list(csv.DictReader(f))


def series(rows, key):
    return np.array([float(r[key]) for r in rows if r.get(key) not in (None, "")])


def weights(folder: pathlib.Path) -> dict[str, torch.Tensor]:
    """The final weights of a run, read into a plain model without a process group."""
    from lm.sample import load_model

    model, meta = load_model(folder)
    assert meta["step"] == 6
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The folder of the runs the tests compare (each made once, by the fixtures below)."""
    return tmp_path_factory.mktemp("lm_runs")


@pytest.fixture(scope="module")
def one(runs, data_root):
    launch(1, runs, data_root, "label=one")
    return run_dir(runs, "one")


@pytest.fixture(scope="module")
def two(runs, data_root):
    launch(2, runs, data_root, "label=two")
    return run_dir(runs, "two")


@pytest.fixture(scope="module")
def resumed(runs, data_root):
    """1 process, stopped with a checkpoint after step 3, then the same command without stop_after."""
    launch(1, runs, data_root, "label=resumed", "stop_after=3")
    launch(1, runs, data_root, "label=resumed")
    return run_dir(runs, "resumed")


@pytest.fixture(scope="module")
def reshard(runs, data_root):
    """2 processes stopped after step 3, resumed on 1. The 2-process part also takes the other code
    paths: activation checkpointing, and gradients reduced only after the last micro step."""
    launch(2, runs, data_root, "label=reshard", "stop_after=3", "distributed.activation_checkpointing=true",
           "distributed.sync_each_micro_step=false")
    launch(1, runs, data_root, "label=reshard")
    return run_dir(runs, "reshard")


def _close(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")


# ------------------------------------------------------------------------------------------- units
def test_lr_schedule_is_the_authors_linear_warmup_and_decay():
    steps, warm = 100, 10
    lrs = [T.lr_at(t, steps, warm, 3e-4, 3e-5) for t in range(1, steps + 1)]
    assert lrs[0] == pytest.approx(3e-5 + 2.7e-4 / 10)
    assert lrs[warm - 1] == pytest.approx(3e-4)          # update 10: the peak
    assert max(lrs) == pytest.approx(3e-4) and lrs[-1] == pytest.approx(3e-5)
    assert all(a <= b for a, b in zip(lrs[:warm - 1], lrs[1:warm]))
    assert all(a >= b for a, b in zip(lrs[warm - 1:-1], lrs[warm:]))


def test_global_batch_is_the_same_for_any_world_size():
    starts = T.global_starts(seed=3, step=7, n=24, tokens=10_000, seq_len=32)
    assert np.array_equal(starts, T.global_starts(3, 7, 24, 10_000, 32))
    assert not np.array_equal(starts, T.global_starts(3, 8, 24, 10_000, 32))
    assert starts.min() >= 0 and starts.max() <= 10_000 - 33
    for world in (1, 2, 3, 4, 8):
        parts = [T.rank_starts(starts, r, world) for r in range(world)]
        assert np.array_equal(np.concatenate(parts), starts)
    idx = [T.eval_assignment(7, r, 3) for r in range(3)]
    assert [len(i) for i, _ in idx] == [3, 3, 3]          # the same number of forwards on every rank
    assert sorted(i for ii, w in idx for i, x in zip(ii, w) if x) == list(range(7))


# ------------------------------------------------------------------------------------ (a) (b) (c)
def test_two_processes_equal_one(one, two):
    a, b = curve(one), curve(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [str(s) for s in range(7)]
    np.testing.assert_allclose(series(a, "loss"), series(b, "loss"), rtol=1e-5)
    np.testing.assert_allclose(series(a, "val_loss"), series(b, "val_loss"), rtol=1e-5)
    np.testing.assert_allclose(series(a, "grad_norm"), series(b, "grad_norm"), rtol=1e-5)
    assert (series(a, "grad_norm") > 0.05).all()          # clipping acted on every step
    assert series(a, "loss")[-1] < series(a, "loss")[0]   # and the model learned
    _close(weights(one), weights(two), rtol=1e-5, atol=1e-6)  # measured: <= 1.2e-7 apart
    r1, r2 = (json.loads((d / T.RECORD).read_text()) for d in (one, two))
    assert r1["status"] == r2["status"] == "complete" and r1["fingerprint"] == r2["fingerprint"]
    assert (r1["world_size"], r1["batch"]["accumulation"]) == (1, 4)
    assert (r2["world_size"], r2["batch"]["accumulation"]) == (2, 2)
    for r in (r1, r2):
        assert r["tokens_trained"] == 6 * 256 and r["tokens_per_s"] > 0
        assert r["final"]["val_loss"] == pytest.approx(float(series(a, "val_loss")[-1]), rel=1e-5)
        assert r["final"]["val_ppl"] == pytest.approx(np.exp(r["final"]["val_loss"]), rel=1e-6)
        assert r["data"]["train"]["remapped"] and r["model"]["params"] > 0 and r["git_commit"]
        assert r["optimizer"]["weight_decay"] == 0.01 and r["optimizer"]["betas"] == [0.9, 0.999]


def test_stopped_run_resumes_equal_to_uninterrupted(runs, one, resumed):
    res = resumed
    rec = json.loads((res / T.RECORD).read_text())
    assert rec["status"] == "complete"
    assert [(s["start_step"], s["end_step"]) for s in rec["segments"]] == [(0, 3), (3, 6)]
    assert [s for s, _ in C.list_checkpoints(res / C.CKPT_DIR)] == [3, 6]
    a, b = curve(one), curve(res)
    assert [r["step"] for r in b] == [str(s) for s in range(7)]
    # the same processes, the same arithmetic: equal to the bit
    assert np.array_equal(series(a, "loss"), series(b, "loss"))
    assert np.array_equal(series(a, "val_loss"), series(b, "val_loss"))
    _close(weights(one), weights(res), rtol=0, atol=0)
    # rerunning a finished run does nothing
    r = launch(1, runs, pathlib.Path(rec["data"]["train"]["root"]), "label=resumed")
    assert "nothing to do" in r.stdout
    assert json.loads((res / T.RECORD).read_text())["updated"] == rec["updated"]


def test_resume_with_another_number_of_processes(one, reshard):
    rs = reshard
    ck = dict(C.list_checkpoints(rs / C.CKPT_DIR))
    assert C.read_meta(ck[3])["world_size"] == 2 and C.read_meta(ck[6])["world_size"] == 1
    rec = json.loads((rs / T.RECORD).read_text())
    assert [(s["world_size"], s["start_step"], s["end_step"], s["activation_checkpointing"])
            for s in rec["segments"]] == [(2, 0, 3, True), (1, 3, 6, False)]
    np.testing.assert_allclose(series(curve(one), "loss"), series(curve(rs), "loss"), rtol=1e-5)
    _close(weights(one), weights(rs), rtol=1e-5, atol=1e-6)


def test_sample_decodes_through_the_remap(one):
    from lm.sample import sample

    texts = sample(one, prompt="The king", tokens=8, temperature=1.0, top_k=5, samples=2, seed=0)
    assert len(texts) == 2 and all(t.startswith("The king") and len(t) > len("The king") for t in texts)
    assert texts == sample(one, prompt="The king", tokens=8, top_k=5, samples=2, seed=0)
    greedy = sample(one, prompt="", tokens=4, temperature=0.0)
    assert isinstance(greedy[0], str)


# ------------------------------------------------------------------------------------------- (d)
def _compose(overrides):
    from benchmarks.config import compose

    return compose(overrides, config_name="lm_train")


@pytest.mark.parametrize("extra, message", [
    (["micro_batch=3"], "not a multiple of micro_batch x processes"),
    (["global_batch_tokens=100"], "not a multiple of seq_len"),
    (["steps=0"], "steps must be >= 1"),
    (["stop_after=7"], "stop_after=7 is after the last step"),
    (["+model.widht=3"], "unknown field(s) ['widht']"),
    (["optimizer.betas=[0.9]"], "optimizer.betas"),
    (["optimizer.min_lr=1.0"], "optimizer.min_lr must be <="),
    (["eval.sequences=100000"], "eval.sequences=100000"),
    (["distributed.device=tpu"], "distributed.device must be one of"),
    (["label=a/b"], "label must be a plain folder name"),
    (["data.root=/nonexistent/lm"], "manifest.json is missing"),
])
def test_bad_config_errors_before_any_work(tmp_path, data_root, capsys, extra, message):
    runs = tmp_path / "runs"
    cfg = _compose([*MODEL, *SMALL, f"paths.runs={runs}", f"data.root={data_root}", *extra])
    assert T.train(cfg, model_name="flash_stu") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not runs.exists()
    import torch.distributed as dist

    assert not dist.is_initialized()


def test_folder_of_other_settings_or_resume_never_is_refused(runs, one, data_root, tmp_path, capsys):
    import shutil

    base = [*MODEL, *SMALL, f"data.root={data_root}", "label=one"]
    assert T.train(_compose(base + [f"paths.runs={runs}", "steps=7"]), model_name="flash_stu") == 1
    assert "other settings" in capsys.readouterr().err
    # a run folder with a checkpoint to resume (the finished run without its record) and resume=never
    copy = run_dir(tmp_path / "runs", "one")
    shutil.copytree(run_dir(runs, "one"), copy)
    (copy / T.RECORD).unlink()
    assert T.train(_compose(base + [f"paths.runs={tmp_path / 'runs'}", "resume=never"]), model_name="flash_stu") == 1
    assert "resume=never" in capsys.readouterr().err


def test_command_line_error_exit_code(data_root, tmp_path):
    r = launch(1, tmp_path / "runs", data_root, "micro_batch=3", check=False)
    assert r.returncode == 1 and "error: " in r.stderr and not (tmp_path / "runs").exists()


def test_slurm_launcher_builds_the_torchrun_command():
    script = ROOT / "scripts" / "slurm_lm.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = dict(os.environ, LM_DRY_RUN="1", SLURM_JOB_NODELIST="gpu-node-3", SLURM_NNODES="2", SLURM_JOB_ID="77",
               SLURM_GPUS_ON_NODE="8", SLURM_SUBMIT_DIR=str(ROOT), PATH="/usr/bin:/bin")
    r = subprocess.run(["bash", str(script), "profile=paper", "model=flash_stu"], env=env, capture_output=True,
                       text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert ("-m torch.distributed.run --nnodes=2 --nproc_per_node=8 --rdzv_id=77 --rdzv_backend=c10d "
            "--rdzv_endpoint=gpu-node-3:29500 -m lm.train profile=paper model=flash_stu") in r.stdout
