import os
import sys
import pathlib

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One torch thread (tiny sizes; two threads on a shared 2-core machine can wait on each other
    for seconds); the count is restored for the tests that follow."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def paths_overrides(root) -> list[str]:
    """Overrides that send every output of a composed config under ``root`` (and quiet it)."""
    return [f"paths.results={root}/res", f"paths.plots={root}/plots", f"paths.runs={root}/runs",
            f"paths.data={root}/data", "progress=false", "device=cpu"]


def tiny_lm_shards(base, words, docs: int, sentences: int, max_words: int):
    """A tiny remapped shard folder in lm.data's format under ``base``: ``docs`` text files of random
    sentences from ``words`` (seeded), 8,192-token shards, 2,048 validation tokens. Skips the test when
    the o200k_base tokenizer cannot be built offline here."""
    import random

    from lm.corpus import Local
    from lm.remap import remap_shards
    from lm.shards import ShardSettings, write_shards
    from lm.tokenizer import get_encoding

    try:
        enc = get_encoding()
    except Exception as e:  # noqa: BLE001 -- no cached ranks and no network
        pytest.skip(f"the o200k_base tokenizer is not available offline here: {e}")
    texts = pathlib.Path(base) / "texts"
    texts.mkdir()
    rng = random.Random(0)
    for i in range(docs):
        sents = [" ".join(rng.choice(words) for _ in range(rng.randint(4, max_words))).capitalize() + "."
                 for _ in range(sentences)]
        (texts / f"doc_{i:02d}.txt").write_text(" ".join(sents), encoding="utf-8")
    out = pathlib.Path(base) / "shards"
    write_shards(Local(texts), out, enc, ShardSettings(shard_tokens=8192, val_tokens=2048), progress=False,
                 log=lambda *a: None)
    remap_shards(out, log=lambda *a: None)
    return out


def run_group(cmd, timeout: float, env=None, cwd=None):
    """``cmd`` in its own session; on a timeout the whole group (torchrun's workers too) is killed."""
    import signal
    import subprocess

    p = subprocess.Popen(cmd, cwd=cwd or ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)
