"""Small file helpers shared by the pipeline: sha256 and atomic writes."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import uuid
from typing import Any, Callable

import numpy as np

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _tmp_name(path: pathlib.Path) -> pathlib.Path:
    # same folder (os.replace is atomic only within one file system); a dot name, never a shard's
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, fsync, then rename:
    a reader sees the old file or the whole new one, never a half-written one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> str:
    """Save ``array`` as ``.npy`` atomically; returns the sha256 of the file's bytes."""
    h = hashlib.sha256()

    class _Hashing:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            h.update(b)
            return self.f.write(b)

    atomic_write(path, lambda f: np.save(_Hashing(f), array, allow_pickle=False))
    return h.hexdigest()
