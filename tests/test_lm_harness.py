"""The lm-eval adapter of the language models (lm/harness.py, lm/eval_tasks/).

One tiny run is trained once for the module (``python -m lm.train``: a 2-layer Flash STU of width 32 on
32-token windows of a ~100-id remapped corpus, 8 steps), in the run-folder format the trainer writes,
and evaluated in process:

(a) the local multiple-choice task through ``lm_eval.simple_evaluate``: accuracy in [0, 1], a whole
    number of the 16 items, equal to the count from log-likelihoods computed directly with the model,
    and every logged per-choice log-likelihood equal to the direct one; the command line writes the
    results JSON and the Markdown table with the paper's Table III references;
(b) ``loglikelihood`` = the sum of the log-softmax of the continuation's tokens (one forward of the
    plain model), greedy flags, batch-size invariance, ``<unk>`` scored or skipped;
(c) contexts longer than the window are truncated from the left (what lies beyond it changes nothing);
(d) ``loglikelihood_rolling`` = lm-eval's documented windows computed by hand; ``generate_until`` =
    greedy decoding by hand, cut at a stop string;
(e) asking for hub tasks where the hub cannot be reached fails at once with a message naming them.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import tiny_lm_shards  # noqa: E402
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install lm-eval==0.4.13: the [lm] extra)")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from lm import harness as H  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
SEQ = 32
MC = H.LOCAL_TASKS / "data" / "local_mc.jsonl"

# the corpus: random sentences over these words (some of the local task's words among them, many not:
# the rest of the task's text maps to <unk> in the remapped vocabulary)
WORDS = ("the a is are what which how many where do does of in on to and sky blue green red day night "
         "week seven days four two plus three five six legs spider cow dog cat bird fish water fire tree "
         "sun east west question answer paris france capital king queen").split()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_lm_shards(tmp_path_factory.mktemp("harness_data"), WORDS, docs=20, sentences=40, max_words=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root):
    """A run folder of lm.train (record.json, checkpoints/step_00000008)."""
    runs = tmp_path_factory.mktemp("harness_runs")
    cmd = [PY, "-m", "lm.train", "threads=1", "model=lm_flash_stu_tiny", "model.width=32", "model.depth=2",
           f"seq_len={SEQ}", "global_batch_tokens=256", "micro_batch=8", "steps=8", "eval.every=0",
           "eval.sequences=2", "checkpoint.every=0", "optimizer.lr=3e-3", "progress=false", "seed=0",
           f"paths.runs={runs}", f"data.root={data_root}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    found = list((runs / "lm" / "smoke" / "lm_flash_stu_tiny").iterdir())
    assert len(found) == 1 and (found[0] / "record.json").is_file()
    return found[0]


@pytest.fixture(scope="module")
def adapter(run):
    return H.FlashSTUBenchLM(run=str(run), batch_size=4)


def reqs(kind, args_list):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args_list]


# ------------------------------------------------------------------------- direct computation
def split(codec, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """EOT + context ids and continuation ids, as lm.sample's Codec encodes (lm-eval's split: the
    context's trailing spaces go to the continuation; the whole pair is encoded and cut)."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    ctx = codec.encode(context)
    return ctx, codec.encode(context + continuation)[len(ctx):]


@torch.no_grad()
def direct(model, ctx: list[int], cont: list[int], unk=None, skip_unk=False) -> tuple[float, bool]:
    """One forward of the plain model on the last SEQ tokens of ctx + cont (minus the last)."""
    inp = (ctx + cont)[-(SEQ + 1):][:-1]
    logits = model(torch.tensor([inp]))[0].double()
    start = len(inp) - len(cont)
    total, greedy = 0.0, True
    for k, t in enumerate(cont):
        row = logits[start + k]
        if skip_unk and t == unk:
            continue
        total += float(torch.log_softmax(row, -1)[t])
        masked = row.clone()
        if unk is not None:
            masked[unk] = -float("inf")
        greedy &= int(masked.argmax()) == t
    return total, greedy


# --------------------------------------------------------------------------------- (a) local task
def test_local_multiple_choice_task_through_simple_evaluate(adapter):
    tm = TaskManager(include_path=str(H.LOCAL_TASKS), include_defaults=False)
    res = lm_eval.simple_evaluate(model=adapter, tasks=["local_mc"], task_manager=tm, bootstrap_iters=0,
                                  log_samples=True)
    docs = [json.loads(line) for line in MC.read_text().splitlines()]
    assert len(docs) == 16 and res["n-samples"]["local_mc"]["effective"] == 16
    acc, acc_norm = res["results"]["local_mc"]["acc,none"], res["results"]["local_mc"]["acc_norm,none"]
    assert 0.0 <= acc <= 1.0 and 0.0 <= acc_norm <= 1.0
    assert abs(acc * 16 - round(acc * 16)) < 1e-9

    right = right_norm = 0
    logged = {s["doc_id"]: s for s in res["samples"]["local_mc"]}
    for i, d in enumerate(docs):
        context = f"Question: {d['question']}\nAnswer:"
        lls = [direct(adapter.model, *split(adapter.codec, context, " " + c), unk=adapter.unk)[0]
               for c in d["choices"]]
        right += int(np.argmax(lls)) == d["answer"]
        right_norm += int(np.argmax(np.array(lls) / [len(c) for c in d["choices"]])) == d["answer"]
        got = [ll for ll, _ in logged[i]["filtered_resps"]]
        np.testing.assert_allclose(got, lls, rtol=1e-5, atol=1e-4)
    assert round(acc * 16) == right
    assert round(acc_norm * 16) == right_norm


def test_command_line_writes_results_and_table(run, tmp_path):
    out = tmp_path / "evals"
    rc = H.main([str(run), "--tasks", "local_mc,local_ppl", "--output", str(out), "--bootstrap-iters", "0",
                 "--batch-size", "5"])
    assert rc == 0
    res = json.loads((out / "local_mc-local_ppl.json").read_text())
    acc = res["results"]["local_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0 and res["results"]["local_ppl"]["word_perplexity,none"] > 1.0
    ours = res["flash_stu_bench"]
    assert ours["step"] == 8 and ours["profile"] == "smoke" and ours["model"] == "lm_flash_stu_tiny"
    assert ours["paper_metrics"]["HellaSwag"] == "acc_norm" and ours["paper_metrics"]["BoolQ"] == "acc"
    assert ours["paper_table3_reference"]["Flash STU 550M"][-1] == 37.03
    md = (out / "local_mc-local_ppl.md").read_text()
    assert md.count("| *paper (reference)*: ") == 4 and "HellaSwag (acc_n)" in md and "ARC-e (acc)" in md
    assert f"| local_mc | acc (%) | {100 * acc:.2f} |" in md
    assert H.output_stem(H.expand_tasks("paper"), None) == "table3"


# ---------------------------------------------------------------------------- (b) loglikelihood
REQUESTS = [
    ("Question: What is two plus two?\nAnswer:", " four"),
    ("The king and the queen", " sat in the sun."),
    ("Where do fish live? ", "In the water"),           # trailing space: moved to the continuation
    ("", "The sky is blue"),                            # empty context: the end-of-text token alone
    ("Two plus", " two"),
]


def test_loglikelihood_equals_direct_computation(adapter, run):
    got = adapter.loglikelihood(reqs("loglikelihood", REQUESTS))
    for (c, x), (lp, greedy) in zip(REQUESTS, got):
        want, want_greedy = direct(adapter.model, *split(adapter.codec, c, x), unk=adapter.unk)
        assert lp == pytest.approx(want, rel=1e-5, abs=1e-4)
        assert greedy == want_greedy
        assert lp < 0
    # greedy flag: a continuation made of the argmax token is greedy
    ctx = adapter.codec.encode("The king")
    with torch.no_grad():
        row = adapter.model(torch.tensor([ctx]))[0, -1]
    row[adapter.unk] = -float("inf")
    best = int(row.argmax())
    assert adapter.score_tokens([(ctx, [best])])[0][1] is True
    # the same numbers one request per forward
    one = H.FlashSTUBenchLM(run=str(run), batch_size=1)
    for (a, ga), (b, gb) in zip(got, one.loglikelihood(reqs("loglikelihood", REQUESTS))):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-4) and ga == gb


def test_unk_tokens_scored_or_skipped(adapter, run):
    c, x = "The king", " sat on the xylophone"   # 'xylophone' is not in the training vocabulary
    ctx, cont = split(adapter.codec, c, x)
    assert adapter.unk in cont and adapter.unk not in ctx
    scored = adapter.loglikelihood(reqs("loglikelihood", [(c, x)]))[0][0]
    assert scored == pytest.approx(direct(adapter.model, ctx, cont, unk=adapter.unk)[0], rel=1e-5, abs=1e-4)
    skip = H.FlashSTUBenchLM(run=str(run), unk="skip")
    before = skip.stats["unk_continuation_tokens"]
    skipped, greedy = skip.loglikelihood(reqs("loglikelihood", [(c, x)]))[0]
    want = direct(adapter.model, ctx, cont, unk=adapter.unk, skip_unk=True)
    assert skipped == pytest.approx(want[0], rel=1e-5, abs=1e-4) and greedy == want[1]
    assert skipped > scored
    assert skip.stats["unk_continuation_tokens"] - before == cont.count(adapter.unk)


# -------------------------------------------------------------------------------- (c) truncation
def test_long_contexts_are_truncated_from_the_left(adapter):
    tail = " ".join(["the king and the queen sat in the sun"] * 6)
    a, b = "Zebra xylophone quartz. " + tail, "Red dog blue cat. " + tail
    x = " and the day"
    ctx, cont = split(adapter.codec, a, x)
    assert len(ctx) + len(cont) > SEQ + 10
    before = adapter.stats["truncated_contexts"]
    (la, ga), (lb, gb) = adapter.loglikelihood(reqs("loglikelihood", [(a, x), (b, x)]))
    assert adapter.stats["truncated_contexts"] - before == 2
    assert la == pytest.approx(direct(adapter.model, ctx, cont, unk=adapter.unk)[0], rel=1e-5, abs=1e-4)
    assert la == pytest.approx(lb, rel=1e-6, abs=1e-5) and ga == gb  # what lies beyond the window is not seen
    with pytest.raises(ValueError, match="does not fit"):
        adapter.score_tokens([([adapter.eot_token_id], [5] * (SEQ + 1))])


# ------------------------------------------------------------------------- (d) rolling, generation
def test_loglikelihood_rolling_windows(adapter):
    short = "The king sat in the sun."
    long = " ".join(["The queen and the king sat in the sun, and the dog and the cat sat in the water."] * 5)
    codec, eot = adapter.codec, adapter.eot_token_id
    got = adapter.loglikelihood_rolling(reqs("loglikelihood_rolling", [(short,), (long,)]))
    # short: one window, the text after an end-of-text token
    toks = codec.encode(short)[1:]
    assert got[0] == pytest.approx(direct(adapter.model, [eot], toks)[0], rel=1e-5, abs=1e-4)
    # long: every token predicted once; windows of SEQ predictions, the last one with a full context
    toks = codec.encode(long)[1:]
    n = len(toks)
    assert n > 3 * SEQ
    want = direct(adapter.model, [eot], toks[:SEQ])[0]
    pos = SEQ
    while pos < n:
        end = min(n, pos + SEQ)
        want += direct(adapter.model, toks[end - SEQ - 1:pos], toks[pos:end])[0]
        pos = end
    assert got[1] == pytest.approx(want, rel=1e-5, abs=1e-3)


@torch.no_grad()
def test_generate_until_is_greedy_and_stops(adapter):
    context = "Question: What is two plus two?\nAnswer:"
    ids = adapter.codec.encode(context)
    new = []
    for _ in range(12):
        row = adapter.model(torch.tensor([ids[-SEQ:]]))[0, -1].clone()
        row[adapter.unk] = -float("inf")
        t = int(row.argmax())
        if t == adapter.eot_token_id:
            break
        new.append(t)
        ids.append(t)
    full = adapter.codec.decode(new)
    got = adapter.generate_until(reqs("generate_until", [(context, {"until": [], "max_gen_toks": 12,
                                                                      "do_sample": False})]))
    assert got == [full]
    if len(full.strip()) >= 3:
        i = max(1, len(full) // 2)
        stop = full[i:i + 2]
        got = adapter.generate_until(reqs("generate_until", [(context, {"until": [stop], "max_gen_toks": 12})]))
        assert got == [full[:full.find(stop)]]
    got = adapter.generate_until(reqs("generate_until", [(context, {"until": ["\n"], "max_gen_toks": 2})]))
    assert len(adapter.tok_encode(got[0])) <= 2


# ------------------------------------------------------------------------------- (e) hub offline
def test_hub_tasks_offline_fail_fast_with_a_clear_message(run, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    t0 = time.perf_counter()
    rc = H.main([str(run), "--tasks", "paper,local_mc"])
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 1 and took < 15, (rc, took)
    assert err.startswith("error: the Hugging Face hub (http://127.0.0.1:9) cannot be reached")
    for task, dataset in H.HUB_DATASETS.items():
        assert f"- {task}: {dataset}" in err
    assert "local_mc:" not in err and "--tasks local_mc" in err
    # before the model is loaded: a run folder that does not exist gives the same error
    assert H.main([str(run / "nowhere"), "--tasks", "hellaswag"]) == 1
    assert "cannot be reached" in capsys.readouterr().err


def test_registered_in_lm_eval(run):
    from lm_eval.api.registry import get_model

    cls = get_model(H.MODEL_NAME)
    assert cls is H.FlashSTUBenchLM
    lm = cls.create_from_arg_string(f"run={run},batch_size=3,unk=skip", {"batch_size": None, "device": None})
    assert lm.batch_size == 3 and lm.unk_policy == "skip" and str(lm.device) == "cpu"
    assert lm.get_model_info()["step"] == 8 and lm.get_model_info()["seq_len"] == SEQ


def test_task_routing():
    assert H.expand_tasks("paper") == ["mmlu", "hellaswag", "piqa", "boolq", "winogrande", "commonsense_qa",
                                       "openbookqa", "arc_easy", "arc_challenge"]
    assert H.expand_tasks("local_mc, hellaswag,local_mc") == ["local_mc", "hellaswag"]
    local, hub = H.plan_tasks(["local_mc", "local_ppl", "hellaswag", "local_mcq"], H.include_paths())
    assert local == ["local_mc", "local_ppl"]
    assert hub["hellaswag"] == "Rowan/hellaswag" and "did you mean local_mc" in hub["local_mcq"]
    H.check_hub({})  # nothing to fetch: never probes


def test_table3_row_uses_the_papers_metrics():
    cols, ref = H.paper_reference()
    assert cols[-1] == "Average" and set(ref) == {"Flash STU 550M", "Mamba-2 Hybrid 546M", "Mamba-2 561M",
                                                   "Transformer 564M"}
    for vals in ref.values():  # the transcribed averages are the mean of the nine columns
        assert sum(vals[:-1]) / 9 == pytest.approx(vals[-1], abs=0.006)
    res = {"results": {t: {"acc,none": 0.5, "acc_norm,none": 0.25} for _, t, _ in H.PAPER_TASKS}}
    row = H.table3_row(res)
    assert row["HellaSwag"] == 25.0 and row["BoolQ"] == 50.0 and row["ARC-c"] == 25.0 and row["ARC-e"] == 50.0
    assert row["Average"] == pytest.approx((4 * 25 + 5 * 50) / 9)
    del res["results"]["mmlu"]
    assert H.table3_row(res)["MMLU"] is None and H.table3_row(res)["Average"] is None
