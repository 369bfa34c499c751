"""Run folders, fingerprints, claims and records: where a run lives and how it is found again.

A run's folder is keyed by its fingerprint, so two runs that compute different numbers can never
share a folder, and one that computes the same numbers always finds its folder again::

    <runs>/<profile>/<experiment>/<task>/<model>/<label>-<fingerprint[:10]>/

``label`` is for people (``seed0``, ``seed1_model.width=16``); the fingerprint is what counts. It
hashes the run's *spec* (:func:`run_spec`): the resolved model and task configs, the resolved
training settings (steps, batch, optimizer after the task's defaults, evaluation settings), dtype and
seed. Values are compared after parsing, so ``optimizer.lr=1e-3`` and ``optimizer.lr=0.001`` are one
run. Not in it: device, threads, progress bars, folders, checkpointing.

Files of a run folder: ``record.json`` (written last: its presence means finished), ``curve.csv``,
``model.pt`` (with ``save_model``), ``checkpoint.pt`` (while running), ``.claim`` (a lock held while
a process trains the run, so two sweeps on one root never train it twice). Temporary files have
unique names (``.<name>.<random>.tmp``); leftovers of a dead process are removed by the next process
that claims the folder. A corrupt record is set aside under a unique name and the run made again.
"""
from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import pathlib
import re
import secrets
import socket
import sys
import tempfile
from typing import Any, Iterator

import yaml


FINGERPRINT_CHARS = 10
# Command-line keys that never change a run's numbers (kept out of labels and of the spec).
NOT_NUMERIC = {"model", "task", "seed", "profile", "experiment", "paths", "progress", "force", "device",
               "threads", "checkpoint_every", "save_model", "logger", "hydra", "launcher",
               "trials", "trial_batch", "batch_trials", "evaluate", "report_only"}
# Task fields that say where data live or how chatty they are, not what they are.
TASK_NOT_NUMERIC = {"progress", "data_dir"}
# Fields added after results were committed, at the value that computes what the runs computed before
# they existed: left out of the spec while they have it, so those runs keep their fingerprints (and
# folders). Any other value is in the spec as usual.
LATE_DEFAULTS = {
    "model": {"block_skip": False, "mlp_hidden": None},
    "task": {"loss": "half_sq", "windows": "random", "sampling": "random", "eval_windows": "tile",
             "normalisation": "train", "noise_units": "normalised", "noise_on": "train"},
}


# ----------------------------------------------------------------------------------- fingerprints
def canonical(obj: Any) -> Any:
    """A JSON-able form in which equal values are equal. Values arrive parsed (``1e-3`` and ``0.001``
    are the same float); integral floats become ints (``lr=1`` and ``lr=1.0`` are one run)."""
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, float):
        if obj != obj:
            return "nan"
        return int(obj) if obj.is_integer() and abs(obj) < 2**53 else obj
    return obj


def fingerprint(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(canonical(spec), sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_spec(resolved: dict[str, Any]) -> dict[str, Any]:
    """What decides a run's numbers, from a resolved run config (``OmegaConf.to_container(cfg,
    resolve=True)`` plus the runner's ``settings``)."""
    task = {k: v for k, v in (resolved.get("task") or {}).items() if k not in TASK_NOT_NUMERIC}
    model = resolved.get("model")
    task = _without_late_defaults(task, "task")
    model = _without_late_defaults(model, "model") if isinstance(model, dict) else model
    return {"model": model, "task": task, "settings": resolved.get("settings"),
            "dtype": resolved.get("dtype"), "seed": resolved.get("seed"),
            "diverge_loss": resolved.get("diverge_loss")}


def _without_late_defaults(cfg: dict[str, Any], part: str) -> dict[str, Any]:
    late = LATE_DEFAULTS[part]
    return {k: v for k, v in cfg.items() if not (k in late and v == late[k])}


def setting_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec without the seed: the runs of one setting differ only in it. The seed's own
    interpolations (e.g. the LDS ``system_seed: ${seed}``) are resolved by the caller with the seed
    replaced (:func:`benchmarks.config.identity`)."""
    return {k: v for k, v in spec.items() if k != "seed"}


# --------------------------------------------------------------------------------------- labels
def _value(text: str) -> str:
    """A command-line value, parsed and printed canonically (``1e-3`` -> ``0.001``)."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(str(x)) for x in v) + "]"
    return str(v)


def label(seed: int, overrides: list[str] | None = None) -> str:
    """``seed<seed>`` plus the overrides that may change the numbers, canonical and file-safe."""
    parts = []
    for o in sorted(overrides or []):
        if "=" not in o:
            continue
        key, val = o.split("=", 1)
        key = key.lstrip("+~")
        if key.split(".")[0] in NOT_NUMERIC or key.split("/")[0] in NOT_NUMERIC:
            continue
        parts.append(f"{key}={_value(val)}")
    text = "_".join([f"seed{seed}", *parts])
    text = re.sub(r"[^A-Za-z0-9_.=,+\-\[\]]", "", text)
    return text if len(text) <= 72 else text[:72]


def run_dir(runs_root: str | os.PathLike, profile: str, experiment: str, task: str, model: str,
            run_label: str, fp: str) -> pathlib.Path:
    return (pathlib.Path(runs_root) / profile / experiment / task / model /
            f"{run_label}-{fp[:FINGERPRINT_CHARS]}")


# ------------------------------------------------------------------------------- unique file names
def stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def set_aside(path: pathlib.Path, why: str) -> pathlib.Path:
    """Rename ``path`` to ``<stem>.<why>-<time>-<pid>-<random><suffix>`` (never overwriting)."""
    path = pathlib.Path(path)
    while True:
        new = path.with_name(f"{path.stem}.{why}-{stamp()}-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")
        if not new.exists():
            break
    os.replace(path, new)
    return new


def atomic_torch_save(obj: Any, path: pathlib.Path) -> None:
    """``torch.save`` to a unique temporary file in the same folder, then rename; the temporary
    file is removed on any failure (a full disk leaves no partial file behind)."""
    import torch

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def clean_temporaries(folder: pathlib.Path) -> list[pathlib.Path]:
    """Remove ``.<name>.*.tmp`` leftovers (call only while holding the folder's claim)."""
    gone = []
    for p in pathlib.Path(folder).glob(".*.tmp"):
        try:
            p.unlink()
            gone.append(p)
        except FileNotFoundError:
            pass
    return gone


# ------------------------------------------------------------------------------------------ claims
class Busy(RuntimeError):
    """Another live process holds the run's claim."""


class Claim:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.claim`` for the life of the ``with``
    block. The kernel drops it when the process dies, so a killed sweep never leaves a run locked.
    The file says who holds it (host, pid, time) for the message another process prints."""

    def __init__(self, folder: pathlib.Path):
        self.folder = pathlib.Path(folder)
        self.path = self.folder / ".claim"
        self.fd: int | None = None

    def __enter__(self) -> "Claim":
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            try:
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise Busy(f"{self.folder} is being trained by another process ({holder or 'unknown'})") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host={socket.gethostname()} pid={os.getpid()} since={stamp()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (harmless, reused next time)
            self.fd = None
        return False


# ------------------------------------------------------------------------------------------ records
class CorruptRecord(ValueError):
    pass


def load_record(path: pathlib.Path) -> dict[str, Any]:
    """A record, or :class:`CorruptRecord` naming its path."""
    path = pathlib.Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRecord(f"{path}: unreadable record ({type(e).__name__}: {e})") from None
    if not isinstance(rec, dict) or "status" not in rec:
        raise CorruptRecord(f"{path}: not a run record (no status field)")
    return rec


def iter_records(root: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every readable ``record.json`` under ``root`` (sorted by path) with ``_dir`` added; a corrupt
    one is reported with its path and skipped (the runner sets it aside when it reruns the run)."""
    for p in sorted(pathlib.Path(root).rglob("record.json")):
        rec = _readable(p)
        if rec is not None:
            yield rec


def _readable(path: pathlib.Path) -> dict[str, Any] | None:
    """The record at ``path`` with ``_dir`` added, or None (a corrupt one is reported, not fatal)."""
    try:
        rec = load_record(path)
    except CorruptRecord as e:
        print(f"warning: skipping {e}", file=sys.stderr)
        return None
    rec["_dir"] = str(path.parent)
    return rec


def read_records(root: str | os.PathLike) -> list[dict[str, Any]]:
    return list(iter_records(root))


def sweep_records(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of a checked sweep's jobs (:func:`benchmarks.config.check_jobs`), read from their
    own folders (one per distinct fingerprint); jobs without a readable record are left out."""
    out, seen = [], set()
    for j in jobs:
        path = pathlib.Path(j["dir"]) / "record.json"
        if j["fingerprint"] in seen or not path.exists():
            continue
        seen.add(j["fingerprint"])
        rec = _readable(path)
        if rec is not None:
            out.append(rec)
    return out
