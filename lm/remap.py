"""The smoke profile's vocabulary: o200k_base ids remapped to the ids the corpus uses.

A 200,019-way embedding and softmax is too expensive for the smoke profile on a CPU, and a small
corpus uses few of those ids (the Shakespeare training shards of the smoke profile use 22,274). :func:`remap_shards` therefore:

1. counts the ids of the *training* shards and keeps those that occur, plus end-of-text, in
   increasing order: ``vocab.npy`` (uint32; new id ``i`` stands for original id ``vocab[i]``);
2. reserves the next id, ``unk_id = len(vocab)``, for ``<unk>``: validation ids that never occur in
   training map there (the model cannot have learned them; their count is recorded);
3. writes remapped copies of every shard, train and validation, to ``remap/<shard>.npy``;
4. records it all in ``manifest.json["remap"]``: the vocabulary file and its sha256, ``vocab_size``
   (``len(vocab) + 1``), ``unk_id``, the new ``eot_id``, the sha256 of each source shard it was built
   from, and per remapped shard its tokens, sha256 and number of ``<unk>`` tokens.

The paper's profile keeps the original ids. :func:`unmap` turns remapped ids back into o200k_base ids
(``<unk>`` -> -1), so remapped text can be decoded with the tokenizer.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from lm._io import atomic_save_npy, atomic_write_json, sha256_file
from lm.shards import DTYPE, MANIFEST, ShardError, check_shard, read_manifest

VOCAB_FILE = "vocab.npy"
REMAP_DIR = "remap"
UNK = "<unk>"
CHUNK = 1 << 24  # tokens per step when counting and mapping (bounded memory for 100M-token shards)


def count_ids(arrays, n_vocab: int) -> np.ndarray:
    """How often each id ``0 .. n_vocab-1`` occurs in ``arrays``."""
    counts = np.zeros(n_vocab, dtype=np.int64)
    for a in arrays:
        for lo in range(0, len(a), CHUNK):
            chunk = np.asarray(a[lo:lo + CHUNK])
            if len(chunk) and int(chunk.max()) >= n_vocab:
                raise ShardError(f"token id {int(chunk.max())} >= n_vocab {n_vocab}")
            counts += np.bincount(chunk, minlength=n_vocab)
    return counts


def build_vocab(train_arrays, n_vocab: int, eot_id: int) -> np.ndarray:
    """Sorted uint32 ids that occur in ``train_arrays``, plus ``eot_id``."""
    counts = count_ids(train_arrays, n_vocab)
    counts[eot_id] += 1
    return np.flatnonzero(counts).astype(DTYPE)


def lookup_table(vocab: np.ndarray, n_vocab: int) -> np.ndarray:
    """``lut[original id] = new id``; ids not in ``vocab`` -> ``unk_id = len(vocab)``."""
    lut = np.full(n_vocab, len(vocab), dtype=DTYPE)
    lut[vocab] = np.arange(len(vocab), dtype=DTYPE)
    return lut


def apply(tokens: np.ndarray, lut: np.ndarray) -> np.ndarray:
    out = np.empty(len(tokens), dtype=DTYPE)
    for lo in range(0, len(tokens), CHUNK):
        out[lo:lo + CHUNK] = lut[np.asarray(tokens[lo:lo + CHUNK])]
    return out


def unmap(ids, vocab: np.ndarray) -> np.ndarray:
    """Remapped ids -> o200k_base ids (int64); ``<unk>`` (``len(vocab)``) -> -1."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > len(vocab)):
        raise ValueError(f"remapped ids must lie in 0..{len(vocab)}")
    table = np.concatenate([vocab.astype(np.int64), [-1]])
    return table[ids]


def load_vocab(out_dir: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """The remapped vocabulary of a shard folder, checked against its recorded sha256."""
    out_dir = pathlib.Path(out_dir)
    m = read_manifest(out_dir)
    r = (m or {}).get("remap")
    if not r:
        raise ShardError(f"{out_dir} has no remapped vocabulary (run the remapping)")
    path = out_dir / r["vocab_file"]
    got = sha256_file(path) if path.is_file() else "missing"
    if got != r["vocab_sha256"]:
        raise ShardError(f"{path}: sha256 {got} != manifest {r['vocab_sha256']}")
    return np.load(path, allow_pickle=False), r


def _current(out_dir: pathlib.Path, m: dict) -> bool:
    r = m.get("remap")
    if not r or r.get("built_from") != [e["sha256"] for e in m["shards"]]:
        return False
    path = out_dir / r["vocab_file"]
    if not path.is_file() or sha256_file(path) != r["vocab_sha256"]:
        return False
    return all(check_shard(out_dir, e, full=True) is None for e in r["shards"])


def remap_shards(out_dir: str | os.PathLike, log=print) -> dict:
    """Build the vocabulary of the training shards of ``out_dir``, write remapped copies of all its
    shards and record them in the manifest; returns ``manifest["remap"]``. A remapping that is
    already there, built from the same shards and intact, is kept as it is."""
    out_dir = pathlib.Path(out_dir)
    m = read_manifest(out_dir)
    if m is None or not m.get("complete"):
        raise ShardError(f"{out_dir}: no complete shards to remap (make them first)")
    if _current(out_dir, m):
        log(f"{out_dir}: remapped vocabulary up to date ({m['remap']['vocab_size']:,} ids)")
        return m["remap"]
    for e in m["shards"]:
        problem = check_shard(out_dir, e, full=True)
        if problem:
            raise ShardError(f"cannot remap: {problem} (rerun the shard making to repair it)")
    n_vocab, eot = int(m["tokenizer"]["n_vocab"]), int(m["tokenizer"]["eot_id"])
    arrays = {e["file"]: np.load(out_dir / e["file"], mmap_mode="r", allow_pickle=False) for e in m["shards"]}
    vocab = build_vocab([arrays[e["file"]] for e in m["shards"] if e["split"] == "train"], n_vocab, eot)
    unk = len(vocab)
    lut = lookup_table(vocab, n_vocab)
    vocab_sha = atomic_save_npy(out_dir / VOCAB_FILE, vocab)
    shards, unk_tokens = [], {"train": 0, "val": 0}
    for e in m["shards"]:
        new = apply(arrays[e["file"]], lut)
        n_unk = int(np.count_nonzero(new == unk))
        unk_tokens[e["split"]] += n_unk
        name = f"{REMAP_DIR}/{e['file']}"
        digest = atomic_save_npy(out_dir / name, new)
        shards.append({"file": name, "split": e["split"], "tokens": int(len(new)), "sha256": digest,
                       "source": e["file"], "source_sha256": e["sha256"], "unk_tokens": n_unk})
    record = {
        "description": "ids of the training shards plus end-of-text, increasing; new id i = vocab[i]; "
                       "validation ids absent from training -> unk_id",
        "vocab_file": VOCAB_FILE,
        "vocab_sha256": vocab_sha,
        "vocab_size": unk + 1,
        "ids": unk,
        "unk_id": unk,
        "unk_token": UNK,
        "eot_id": int(lut[eot]),
        "source_eot_id": eot,
        "source_n_vocab": n_vocab,
        "built_from": [e["sha256"] for e in m["shards"]],
        "unk_tokens": unk_tokens,
        "shards": shards,
    }
    m["remap"] = record
    atomic_write_json(out_dir / MANIFEST, m)
    log(f"{out_dir}: remapped to {unk + 1:,} ids ({unk:,} used in training + <unk>); "
        f"{unk_tokens['val']:,} validation tokens -> <unk>")
    return record
