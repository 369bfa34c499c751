"""Checkpoints of :mod:`lm.train`: sharded model + optimizer state with ``torch.distributed.checkpoint``.

Layout of ``<run folder>/checkpoints/``::

    step_00000100/            one checkpoint: the DCP files (.metadata, __<rank>_0.distcp) and
        meta.json             step, run fingerprint, curve so far, segments, saving world size
    .tmp-step_00000200/       a checkpoint being written (never read; removed at the next start)

Writing is atomic: every rank writes its shard into ``.tmp-step_N``, then rank 0 adds ``meta.json``
and renames the folder to ``step_N``. A folder named ``step_N`` with ``meta.json`` and ``.metadata``
is therefore complete; :func:`latest` picks the highest. The state dict is the *sharded* one of
``torch.distributed.checkpoint.state_dict.get_state_dict`` (FSDP2 DTensors, keyed by parameter
names without wrapper prefixes), so :func:`load` reshards it onto any number of processes, and
:func:`load_model_weights` reads the model's weights into a plain module without a process group
(sampling, tests). The training windows are a function of (seed, step), so the step is the whole
data position; the CPU RNG state is saved too (rank 0's, restored on every rank).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
from typing import Any

import torch

CKPT_DIR = "checkpoints"
META = "meta.json"
_STEP = re.compile(r"^step_(\d{8})$")


def step_dir(ckpt_root: str | os.PathLike, step: int) -> pathlib.Path:
    return pathlib.Path(ckpt_root) / f"step_{step:08d}"


def _complete(path: pathlib.Path) -> bool:
    return (path / META).is_file() and (path / ".metadata").is_file()


def list_checkpoints(ckpt_root: str | os.PathLike) -> list[tuple[int, pathlib.Path]]:
    """Complete checkpoints under ``ckpt_root``, by step."""
    root = pathlib.Path(ckpt_root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP.match(p.name)
        if m and p.is_dir() and _complete(p):
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest(ckpt_root: str | os.PathLike) -> tuple[int, pathlib.Path] | None:
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def read_meta(path: str | os.PathLike) -> dict:
    return json.loads((pathlib.Path(path) / META).read_text())


def resolve(path: str | os.PathLike) -> pathlib.Path:
    """A checkpoint folder from a checkpoint folder, a ``checkpoints/`` folder or a run folder (latest)."""
    p = pathlib.Path(path)
    if _complete(p):
        return p
    for root in (p, p / CKPT_DIR):
        got = latest(root)
        if got:
            return got[1]
    raise FileNotFoundError(f"no complete checkpoint in {p} (nor in {p / CKPT_DIR})")


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _fsync_dir(path: pathlib.Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_partial(ckpt_root: str | os.PathLike) -> None:
    """Remove the ``.tmp-*`` folders of interrupted saves (rank 0, before any save)."""
    root = pathlib.Path(ckpt_root)
    if root.is_dir():
        for p in root.glob(".tmp-step_*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in root.glob(".old-step_*"):
            shutil.rmtree(p, ignore_errors=True)


def _state(model, optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    return {"model": msd, "optim": osd, "rng": {"cpu": torch.get_rng_state()}}


def save(ckpt_root: str | os.PathLike, step: int, model, optimizer, meta: dict, *, rank: int,
         keep: int | None = None, write_json=None) -> pathlib.Path:
    """Save a checkpoint of ``step`` (a collective: every rank calls it); returns its folder.
    ``keep``: then remove the oldest checkpoints beyond the ``keep`` newest (rank 0)."""
    import torch.distributed.checkpoint as dcp

    root = pathlib.Path(ckpt_root)
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    dcp.save(_state(model, optimizer), checkpoint_id=str(tmp))
    _barrier()
    if rank == 0:
        text = json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n"
        with open(tmp / META, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = None
        if final.exists():  # the same step saved again (a rerun): move the old one aside first
            old = root / f".old-{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if keep is not None:
            prune(root, keep, protect=(step,))
    _barrier()
    return final


def prune(ckpt_root: str | os.PathLike, keep: int, protect=()) -> None:
    found = [(s, p) for s, p in list_checkpoints(ckpt_root)]
    removable = [(s, p) for s, p in found if s not in protect]
    excess = len(found) - keep
    for s, p in removable[:max(0, excess)]:
        shutil.rmtree(p, ignore_errors=True)


def load(path: str | os.PathLike, model, optimizer) -> None:
    """Load a checkpoint into the (FSDP2-sharded) ``model`` and ``optimizer`` of this process group
    (any number of processes: DCP reshards); restores the CPU RNG state. A collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _state(model, optimizer)
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    torch.set_rng_state(state["rng"]["cpu"])


def load_model_weights(path: str | os.PathLike, model: torch.nn.Module) -> torch.nn.Module:
    """The model weights of checkpoint ``path`` (a checkpoint, ``checkpoints/`` or run folder) into
    a plain, unsharded ``model``; works without a process group."""
    import warnings

    import torch.distributed.checkpoint as dcp

    path = resolve(path)
    sd = model.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming the intent is to load in a single process"
        dcp.load({"model": sd}, checkpoint_id=str(path))
    model.load_state_dict(sd)
    return model
