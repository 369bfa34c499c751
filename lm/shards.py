"""Token shards: tokenise a corpus into uint32 ``.npy`` shards with a manifest, and read them back.

Layout of an output folder (``<paths.data>/lm/<corpus>/`` from the command line)::

    manifest.json        format, settings, corpus record (name, version, source, sha256), tokenizer
                         record (name, ranks sha256, n_vocab, eot id), per-shard file/split/tokens/sha256
                         and document span, totals, documents_sha256, versions, timing; "remap" when
                         lm.remap made the smoke vocabulary
    val_000000.npy       the validation shard: the FIRST ``val_tokens`` tokens of the token stream
    train_000001.npy ..  training shards of ``shard_tokens`` tokens each; the last one may be shorter
    vocab.npy, remap/    (lm.remap) the remapped vocabulary and the remapped shards

The token stream is, for each document in the corpus's order, the end-of-text token (199999 for
o200k_base) followed by the document's tokens (``encode_ordinary``: text that looks like a special
token is encoded as text). Shards cut this stream at fixed token counts, so a document can straddle
two shards, and the document at the validation/training cut has its head in validation and its tail
in training. Each shard is a 1-D little-endian ``uint32`` ``.npy`` array.

Writing is atomic (temporary file + rename) and resumable: ``manifest.json`` is rewritten after each
shard with ``"complete": false`` and the stream position where the next shard starts; a rerun checks
the shards already listed (sha256), keeps the good ones, skips the documents they cover without
tokenising them and goes on from there. A complete folder is only verified. A folder made with other
settings, another corpus or another tokenizer is refused unless ``overwrite=True``. Settings and the
corpus are checked before any file is written.

:class:`TokenShards` memory-maps the shards of one split and serves next-token batches ``(x, y)`` of
shape ``(B, L)``: random windows drawn with a ``torch.Generator`` for training, consecutive
non-overlapping windows for validation.
"""
from __future__ import annotations

import collections
import datetime
import hashlib
import json
import os
import pathlib
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from lm._io import atomic_save_npy, atomic_write_json, sha256_file
from lm.corpus import Corpus
from lm.tokenizer import tokenizer_record

MANIFEST = "manifest.json"
FORMAT = "flash-stu-bench/lm-token-shards"
FORMAT_VERSION = 1
DTYPE = np.dtype("<u4")
# corpus-record fields that may differ between two makings of the same bytes (paths, versions)
_VOLATILE_CORPUS = ("source", "data_files", "datasets")
_TOKENIZER_IDENTITY = ("name", "ranks_sha256", "pat_str_sha256", "special_tokens", "eot_id", "n_vocab")


class ShardError(RuntimeError):
    """Shards that cannot be made or used as asked (bad settings, other settings, corrupt files)."""


@dataclass(frozen=True)
class ShardSettings:
    """The settings that decide the bytes of the shards (recorded, and compared on a rerun)."""
    shard_tokens: int = 100_000_000
    val_tokens: int | None = None   # tokens of the validation shard (None: shard_tokens)
    max_tokens: int | None = None   # stop after this many tokens in all (None: the whole corpus)
    max_docs: int | None = None     # stop after this many documents (None: all)

    def check(self) -> "ShardSettings":
        def positive(name, v, allow_none):
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ShardError(f"{name} must be a positive integer{' or null' if allow_none else ''}, got {v!r}")
        positive("shard_tokens", self.shard_tokens, False)
        positive("val_tokens", self.val_tokens, True)
        positive("max_tokens", self.max_tokens, True)
        positive("max_docs", self.max_docs, True)
        if self.max_tokens is not None and self.max_tokens <= self.val_tokens_:
            raise ShardError(f"max_tokens={self.max_tokens} leaves no training tokens after the validation "
                             f"shard of {self.val_tokens_}")
        return self

    @property
    def val_tokens_(self) -> int:
        return int(self.val_tokens if self.val_tokens is not None else self.shard_tokens)

    def record(self) -> dict:
        return {"shard_tokens": int(self.shard_tokens), "val_tokens": self.val_tokens_,
                "max_tokens": None if self.max_tokens is None else int(self.max_tokens),
                "max_docs": None if self.max_docs is None else int(self.max_docs),
                "eot": "before each document", "dtype": "uint32 little-endian", "file_format": "npy",
                "validation": "the first val_tokens tokens of the stream (shard 0)"}


def shard_name(index: int) -> str:
    return f"{'val' if index == 0 else 'train'}_{index:06d}.npy"


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    path = pathlib.Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShardError(f"{path} is not valid JSON ({e}); remove it (and the shards) or pass overwrite") from None
    if m.get("format") != FORMAT:
        raise ShardError(f"{path} is not a token-shard manifest (format {m.get('format')!r})")
    return m


def identity(manifest: dict) -> dict:
    """The parts of a manifest that two makings of the same shards share."""
    return {
        "format_version": manifest.get("format_version"),
        "settings": manifest.get("settings"),
        "corpus": {k: v for k, v in (manifest.get("corpus") or {}).items() if k not in _VOLATILE_CORPUS},
        "tokenizer": {k: (manifest.get("tokenizer") or {}).get(k) for k in _TOKENIZER_IDENTITY},
    }


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b), key=str):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {_short(va)} (there) != {_short(vb)} (asked)")
    return out


def _short(v) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) < 80 else s[:77] + "..."


def check_shard(out_dir: pathlib.Path, entry: dict, full: bool = True) -> str | None:
    """None when the shard file of ``entry`` is there with its token count (and sha256 when ``full``);
    else what is wrong."""
    path = out_dir / entry["file"]
    if not path.is_file():
        return f"{path}: missing"
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 -- a truncated or foreign file
        return f"{path}: unreadable ({type(e).__name__}: {e})"
    if arr.dtype != DTYPE or arr.ndim != 1 or arr.shape[0] != entry["tokens"]:
        return f"{path}: {arr.dtype} {arr.shape}, expected uint32 ({entry['tokens']},)"
    del arr
    if full:
        got = sha256_file(path)
        if got != entry["sha256"]:
            return f"{path}: sha256 {got} != manifest {entry['sha256']}"
    return None


def verify(out_dir: str | os.PathLike, full: bool = True) -> list[str]:
    """Problems of a shard folder (empty: complete, every count and sha256 as recorded), remapped
    shards and vocabulary included."""
    out_dir = pathlib.Path(out_dir)
    m = read_manifest(out_dir)
    if m is None:
        return [f"{out_dir / MANIFEST}: missing"]
    problems = [] if m.get("complete") else [f"{out_dir}: incomplete (rerun to finish it)"]
    for e in m["shards"]:
        p = check_shard(out_dir, e, full)
        if p:
            problems.append(p)
    if m.get("complete"):
        tot = m["totals"]
        if sum(e["tokens"] for e in m["shards"]) != tot["tokens"]:
            problems.append(f"{out_dir / MANIFEST}: shard token counts do not add up to totals.tokens")
    r = m.get("remap")
    if r:
        vocab = out_dir / r["vocab_file"]
        if not vocab.is_file() or (full and sha256_file(vocab) != r["vocab_sha256"]):
            problems.append(f"{vocab}: missing or sha256 != manifest")
        for e in r["shards"]:
            p = check_shard(out_dir, e, full)
            if p:
                problems.append(p)
    return problems


def _clean_tmp(out_dir: pathlib.Path) -> None:
    for d in (out_dir, out_dir / "remap"):
        if d.is_dir():
            for p in d.glob(".*.tmp-*"):
                p.unlink(missing_ok=True)


def _remove_remap(out_dir: pathlib.Path, manifest: dict) -> None:
    r = manifest.get("remap") or {}
    for e in r.get("shards", []):
        (out_dir / e["file"]).unlink(missing_ok=True)
    if r.get("vocab_file"):
        (out_dir / r["vocab_file"]).unlink(missing_ok=True)


def remove_shards(out_dir: pathlib.Path, manifest: dict | None) -> None:
    """Remove what a manifest lists (shards, vocabulary, remapped shards) and the manifest."""
    if manifest:
        for e in manifest.get("shards", []):
            (out_dir / e["file"]).unlink(missing_ok=True)
        _remove_remap(out_dir, manifest)
    for pattern in ("val_[0-9][0-9][0-9][0-9][0-9][0-9].npy", "train_[0-9][0-9][0-9][0-9][0-9][0-9].npy"):
        for p in out_dir.glob(pattern):
            p.unlink()
    if (out_dir / "remap").is_dir():
        shutil.rmtree(out_dir / "remap")
    (out_dir / MANIFEST).unlink(missing_ok=True)


def _versions() -> dict:
    import tiktoken

    v = {"python": platform.python_version(), "numpy": np.__version__, "tiktoken": tiktoken.__version__}
    if "datasets" in sys.modules:
        v["datasets"] = sys.modules["datasets"].__version__
    return v


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ writing
def _batched(it: Iterable, n: int) -> Iterator[list]:
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def write_shards(corpus: Corpus, out_dir: str | os.PathLike, enc, settings: ShardSettings | None = None, *,
                 threads: int = 1, batch_docs: int = 64, overwrite: bool = False, progress: bool = True,
                 extra: dict | None = None, log=print) -> dict:
    """Tokenise ``corpus`` with ``enc`` into shards under ``out_dir``; returns the manifest.

    ``threads``: tiktoken threads per batch of ``batch_docs`` documents (the bytes do not depend on
    either). ``extra``: recorded as ``manifest["run"]`` (e.g. the command line). See the module
    docstring for the layout, resumption and the checks."""
    settings = (settings or ShardSettings()).check()
    if not isinstance(threads, int) or threads < 1 or not isinstance(batch_docs, int) or batch_docs < 1:
        raise ShardError(f"threads and batch_docs must be positive integers, got {threads!r}, {batch_docs!r}")
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ShardError(f"{out_dir} exists and is not a folder")
    eot = enc.eot_token

    # --- everything that can fail before a file is written
    corpus.validate()  # CorpusError: missing, unreachable or malformed input
    base = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "complete": False,
        "settings": settings.record(), "corpus": corpus.record(), "tokenizer": tokenizer_record(enc),
    }
    old = read_manifest(out_dir)
    done: list[dict] = []
    if old is not None:
        diff = _diff(identity(old), identity(base))
        if diff and not overwrite:
            raise ShardError(f"{out_dir} holds shards made differently:\n  " + "\n  ".join(diff)
                             + "\nchoose another output folder or pass overwrite=true")
        if diff:
            log(f"overwriting {out_dir} ({len(diff)} setting(s) differ)")
            remove_shards(out_dir, old)
            old = None
        else:
            _clean_tmp(out_dir)
            for e in old["shards"]:  # keep the leading run of good shards
                problem = check_shard(out_dir, e, full=True)
                if problem:
                    log(f"remaking from shard {e['file']}: {problem}")
                    break
                done.append(e)
            if old.get("complete") and len(done) == len(old["shards"]):
                log(f"{out_dir}: complete, {len(done)} shard(s) verified; nothing to do")
                return old
            for e in old["shards"][len(done):]:
                (out_dir / e["file"]).unlink(missing_ok=True)
            _remove_remap(out_dir, old)
            if done:
                log(f"resuming {out_dir} after {len(done)} verified shard(s)")

    manifest = dict(base, created=(old or {}).get("created", _now()), run=extra or {}, shards=list(done))
    if old is not None:  # the folder now says what it holds: the verified shards, incomplete
        atomic_write_json(out_dir / MANIFEST, manifest)
    start_doc, start_off = (done[-1]["next_doc"], done[-1]["next_offset"]) if done else (0, 0)
    written = sum(e["tokens"] for e in done)
    budget = None if settings.max_tokens is None else settings.max_tokens - written

    def target(k: int) -> int:
        return settings.val_tokens_ if k == 0 else int(settings.shard_tokens)

    from tqdm.auto import tqdm

    bar = tqdm(total=settings.max_tokens, initial=written, unit="tok", unit_scale=True, disable=not progress,
               desc=f"tokenising {corpus.name}", mininterval=1.0)
    parts: collections.deque = collections.deque()  # [doc, offset of arr[0] in the doc's sequence, arr]
    pending = 0
    docs_seen = 0
    docs_hash = hashlib.sha256()
    t0 = time.perf_counter()
    tokenised = 0

    def flush(n: int) -> None:
        """Write the first ``n`` pending tokens as the next shard."""
        nonlocal pending
        k = len(manifest["shards"])
        out = np.empty(n, dtype=DTYPE)
        filled, first_doc = 0, parts[0][0]
        while filled < n:
            d, off, arr = parts[0]
            take = min(n - filled, len(arr))
            out[filled:filled + take] = arr[:take]
            filled += take
            last_doc = d
            if take == len(arr):
                parts.popleft()
                next_doc, next_off = d + 1, 0
            else:
                parts[0] = [d, off + take, arr[take:]]
                next_doc, next_off = d, off + take
        if parts:  # the next shard starts where the pending tokens do
            next_doc, next_off = parts[0][0], parts[0][1]
        pending -= n
        name = shard_name(k)
        digest = atomic_save_npy(out_dir / name, out)
        manifest["shards"].append({"file": name, "split": "val" if k == 0 else "train", "tokens": int(n),
                                   "sha256": digest, "first_doc": int(first_doc), "last_doc": int(last_doc),
                                   "next_doc": int(next_doc), "next_offset": int(next_off)})
        atomic_write_json(out_dir / MANIFEST, manifest)

    def encode(texts: list[str]) -> list[list[int]]:
        if threads > 1 and len(texts) > 1:
            return enc.encode_ordinary_batch(texts, num_threads=threads)
        return [enc.encode_ordinary(t) for t in texts]

    def note(d: int, text: str) -> None:
        """Count and hash document ``d`` (every document the shards use, in order)."""
        nonlocal docs_seen
        raw = text.encode("utf-8")
        docs_hash.update(len(raw).to_bytes(8, "little") + raw)
        docs_seen = d + 1

    docs = corpus.documents()
    if settings.max_docs is not None:
        docs = (doc for i, doc in zip(range(settings.max_docs), docs))
    stop = False
    try:
        for batch in _batched(enumerate(docs), batch_docs):
            if stop:
                break
            todo = []
            for d, doc in batch:
                if d < start_doc:  # covered by the verified shards: hashed, not tokenised
                    note(d, doc.text)
                else:
                    todo.append((d, doc.text))
            if not todo:
                continue
            for (d, text), toks in zip(todo, encode([t for _, t in todo])):
                partly_used = d == start_doc and start_off > 0  # its head is in the verified shards
                if budget is not None and budget <= 0 and not partly_used:
                    stop = True
                    break
                note(d, text)
                seq = np.empty(len(toks) + 1, dtype=DTYPE)
                seq[0] = eot
                seq[1:] = toks
                off = start_off if d == start_doc else 0
                seq = seq[off:]
                if budget is not None:
                    seq = seq[:budget]
                    budget -= len(seq)
                if len(seq):
                    parts.append([d, off, seq])
                    pending += len(seq)
                    tokenised += len(seq)
                    bar.update(len(seq))
                while pending > target(len(manifest["shards"])):
                    if not manifest["shards"]:
                        out_dir.mkdir(parents=True, exist_ok=True)
                    flush(target(len(manifest["shards"])))
                if budget is not None and budget <= 0:
                    stop = True
                    break
    finally:
        bar.close()
    if pending:
        if not manifest["shards"]:
            raise ShardError(f"{corpus.name} gave only {pending} tokens: the validation shard alone takes "
                             f"val_tokens={settings.val_tokens_}, leaving nothing to train on; lower val_tokens")
        flush(pending)
    if not manifest["shards"]:
        raise ShardError(f"{corpus.name} gave no tokens")
    elapsed = time.perf_counter() - t0
    shards = manifest["shards"]
    manifest.update(
        complete=True,
        totals={"tokens": sum(e["tokens"] for e in shards),
                "val_tokens": sum(e["tokens"] for e in shards if e["split"] == "val"),
                "train_tokens": sum(e["tokens"] for e in shards if e["split"] == "train"),
                "val_shards": sum(e["split"] == "val" for e in shards),
                "train_shards": sum(e["split"] == "train" for e in shards),
                "documents": docs_seen},
        documents_sha256=docs_hash.hexdigest(),
        documents_sha256_of="for each document used, in order: its UTF-8 length (u64 LE) then its UTF-8 bytes",
        versions=_versions(),
        finished=_now(),
        timing={"seconds": round(elapsed, 3), "tokens_this_run": tokenised,
                "tokens_per_second": round(tokenised / elapsed) if elapsed > 0 else None, "threads": threads},
    )
    manifest.pop("remap", None)
    atomic_write_json(out_dir / MANIFEST, manifest)
    log(f"{out_dir}: {manifest['totals']['tokens']:,} tokens from {docs_seen:,} documents in {len(shards)} "
        f"shard(s) ({elapsed:.1f} s)")
    return manifest


# ------------------------------------------------------------------------------------------ reading
class TokenShards:
    """The shards of one split, memory-mapped, as one token stream.

    ``remapped=True`` reads the remapped shards of :mod:`lm.remap` (ids ``0 .. vocab_size-1``).
    ``verify=True`` checks every shard's sha256 first (otherwise only sizes are checked)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", remapped: bool = False, verify: bool = False):
        if split not in ("train", "val"):
            raise ShardError(f"split must be 'train' or 'val', got {split!r}")
        self.root = pathlib.Path(root)
        m = read_manifest(self.root)
        if m is None:
            raise ShardError(f"{self.root / MANIFEST} is missing: make the shards first (python -m lm.data ...)")
        if not m.get("complete"):
            raise ShardError(f"{self.root} is incomplete: rerun python -m lm.data to finish it")
        self.manifest, self.split, self.remapped = m, split, remapped
        if remapped:
            r = m.get("remap")
            if not r:
                raise ShardError(f"{self.root} has no remapped shards: run the remapping (remap=true)")
            if r.get("built_from") != [e["sha256"] for e in m["shards"]]:
                raise ShardError(f"{self.root}: the remapped shards were built from other shards; rerun the remapping")
            entries = [e for e in r["shards"] if e["split"] == split]
            self.vocab_size, self.eot_id, self.unk_id = r["vocab_size"], r["eot_id"], r["unk_id"]
        else:
            entries = [e for e in m["shards"] if e["split"] == split]
            self.vocab_size, self.eot_id, self.unk_id = m["tokenizer"]["n_vocab"], m["tokenizer"]["eot_id"], None
        if not entries:
            raise ShardError(f"{self.root}: no {split} shards")
        for e in entries:
            problem = check_shard(self.root, e, full=verify)
            if problem:
                raise ShardError(problem)
        self.entries = entries
        self.arrays = [np.load(self.root / e["file"], mmap_mode="r", allow_pickle=False) for e in entries]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.tokens = int(self.offsets[-1])

    def __len__(self) -> int:
        return self.tokens

    def read(self, start: int, n: int) -> np.ndarray:
        """Tokens ``start .. start+n-1`` of the split's stream (across shard boundaries)."""
        if start < 0 or n < 0 or start + n > self.tokens:
            raise IndexError(f"tokens {start}..{start + n} outside 0..{self.tokens}")
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        out, pos = [], start
        while n > 0:
            a = self.arrays[i]
            lo = pos - int(self.offsets[i])
            take = min(n, len(a) - lo)
            out.append(a[lo:lo + take])
            n -= take
            pos += take
            i += 1
        return np.concatenate(out) if len(out) != 1 else np.array(out[0])

    def _check_len(self, seq_len: int) -> None:
        if seq_len < 1 or seq_len + 1 > self.tokens:
            raise ShardError(f"seq_len={seq_len} needs {seq_len + 1} tokens; the {self.split} split has {self.tokens}")

    def _windows(self, starts, seq_len: int):
        import torch

        rows = np.stack([self.read(int(s), seq_len + 1) for s in starts]).astype(np.int64)
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    def get_batch(self, batch_size: int, seq_len: int, generator=None):
        """``(x, y)``, each ``(batch_size, seq_len)`` int64: windows starting at positions drawn
        uniformly from ``[0, tokens - seq_len - 1]`` with ``generator``; ``y`` is ``x`` shifted by one."""
        import torch

        self._check_len(seq_len)
        starts = torch.randint(0, self.tokens - seq_len, (batch_size,), generator=generator)
        return self._windows(starts.tolist(), seq_len)

    def batches(self, batch_size: int, seq_len: int, generator=None) -> Iterator:
        """Endless training batches (:meth:`get_batch`)."""
        while True:
            yield self.get_batch(batch_size, seq_len, generator)

    def num_windows(self, seq_len: int) -> int:
        self._check_len(seq_len)
        return (self.tokens - 1) // seq_len

    def sequential(self, batch_size: int, seq_len: int, max_batches: int | None = None) -> Iterator:
        """Validation batches: window ``i`` is ``x = tokens[i*L : i*L+L]``, ``y = tokens[i*L+1 : i*L+L+1]``,
        in order, ``batch_size`` windows a batch (the last batch may be smaller; the tail shorter
        than one window is left out). Every call yields the same batches."""
        n = self.num_windows(seq_len)
        for b, lo in enumerate(range(0, n, batch_size)):
            if max_batches is not None and b >= max_batches:
                return
            yield self._windows([i * seq_len for i in range(lo, min(n, lo + batch_size))], seq_len)

    def provenance(self) -> dict:
        """What a training run records of the data it read."""
        m = self.manifest
        c, t = m["corpus"], m["tokenizer"]
        rec = {
            "root": str(self.root),
            "manifest_sha256": sha256_file(self.root / MANIFEST),
            "split": self.split,
            "split_tokens": self.tokens,
            "corpus": {k: c.get(k) for k in ("name", "version", "source", "sha256", "editions", "config", "hub_commit")
                       if k in c},
            "documents_sha256": m.get("documents_sha256"),
            "tokenizer": {k: t[k] for k in ("name", "ranks_sha256", "n_vocab", "eot_id")},
            "settings": m["settings"],
            "totals": m["totals"],
            "vocab_size": self.vocab_size,
            "remapped": self.remapped,
        }
        if self.remapped:
            r = m["remap"]
            rec["remap"] = {k: r[k] for k in ("vocab_file", "vocab_sha256", "vocab_size", "unk_id", "eot_id")}
        return rec
