"""Run records: where a run lives, what it records, and atomic writes (temp file, then rename)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
from typing import Any, Iterable

REPO = pathlib.Path(__file__).resolve().parent.parent


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: pathlib.Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    import io

    buf = io.StringIO()
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        # the suite's own outputs (results/, plots/) do not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)plots"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_diff(folder: pathlib.Path, commit: str) -> str | None:
    """When ``commit`` says the code was dirty, store ``git diff HEAD`` (the suite's outputs, results/
    and plots/, left out) as ``<folder>/git.diff`` beside the record; return its name (else None)."""
    if not commit.endswith("-dirty"):
        return None
    try:
        diff = subprocess.run(["git", "diff", "HEAD", "--", ".", ":(exclude)results", ":(exclude)plots"], cwd=REPO,
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    atomic_write_text(pathlib.Path(folder) / "git.diff", diff)
    return "git.diff"


def package_versions(names: Iterable[str] = ("torch", "numpy", "hydra-core", "omegaconf", "scipy",
                                              "mujoco", "gymnasium", "seals", "stable-baselines3",
                                              "flash-attn", "mamba-ssm", "flashfftconv", "triton")) -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": str(device), "host": platform.node(), "platform": platform.platform()}
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["cpu"] = _cpu_name()
        info["cpu_count"] = os.cpu_count()
        info["torch_threads"] = torch.get_num_threads()
    return info


def short_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]
