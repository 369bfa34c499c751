"""The environment matches requirements.lock: every locked package that is installed has exactly the
locked version (``make setup`` installs with ``pip -c requirements.lock``), and the Python minor is
the pinned one. Packages of the lock that are not installed are skipped (the CUDA-only ones that
torch's PyPI metadata brings in, extras not installed)."""
from __future__ import annotations

import importlib.metadata as md
import pathlib
import re
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
CORE = ("torch", "numpy", "hydra-core", "omegaconf", "scipy", "pandas", "matplotlib")


def read_lock(path: pathlib.Path = LOCK) -> dict[str, str]:
    """``{canonical name: version}`` from the ``name==version`` lines (comments and the indented
    ``# via`` annotations skipped)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{LOCK.name}: not an exact pin: {line!r}"
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def matches(installed: str, pinned: str) -> bool:
    """``torch==2.13.0`` accepts the local build ``2.13.0+cpu`` (pip's ``==`` does the same)."""
    iv, pv = Version(installed), Version(pinned)
    return iv == pv or (pv.local is None and Version(iv.public) == pv)


def test_lock_pins_every_package_exactly():
    pins = read_lock()
    assert len(pins) > 40
    for name in CORE + ("mujoco", "gymnasium", "seals", "stable-baselines3", "pytest"):
        assert name in pins, f"{name} is not in {LOCK.name}"
    assert "+" not in pins["torch"], "torch's line must be plain torch==X so pip takes the local CPU wheel X+cpu"


def test_installed_versions_equal_the_lock():
    pins = read_lock()
    checked, wrong = [], []
    for name, pinned in sorted(pins.items()):
        have = installed_version(name)
        if have is None:
            continue
        checked.append(name)
        if not matches(have, pinned):
            wrong.append(f"{name}: installed {have}, locked {pinned}")
    assert not wrong, ("installed versions differ from requirements.lock (make setup reinstalls them):\n  "
                       + "\n  ".join(wrong))
    missing = [n for n in CORE if n not in checked]
    assert not missing, f"core packages not installed: {missing}"


def test_cpu_torch_brings_no_cuda_packages():
    torch_version = installed_version("torch")
    if torch_version is None or Version(torch_version).local != "cpu":
        pytest.skip(f"not the CPU build of torch ({torch_version})")
    cuda_only = [n for n in read_lock() if re.match(r"(nvidia-|cuda-|triton$)", n)]
    assert cuda_only, "the lock lists torch's CUDA packages (from its PyPI metadata)"
    installed = [n for n in cuda_only if installed_version(n) is not None]
    assert not installed, f"CUDA-only packages installed next to the CPU torch: {installed}"


def test_python_minor_is_pinned_everywhere():
    want = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", want), want
    pyproject = (ROOT / "pyproject.toml").read_text()
    lo = want
    hi = f"3.{int(want.split('.')[1]) + 1}"
    assert f'requires-python = ">={lo},<{hi}"' in pyproject
    assert f"--python-version {want}" in LOCK.read_text(), "the lock is resolved for the pinned Python"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^PY_MINOR := {re.escape(want)}$", makefile, flags=re.M)
    assert "%d.%d" % sys.version_info[:2] == want, (
        f"running Python {sys.version.split()[0]}, the project is pinned to {want} (make setup PYTHON=python{want})")


def test_gpu_check_skips_every_cuda_step_with_the_reason_on_a_cpu(tmp_path):
    """`make gpu-check` is meant for a GPU machine; on a CPU it installs nothing, runs nothing, says why."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, GPU_PY=sys.executable, FSB_RESULTS=str(tmp_path / "res"), FSB_PLOTS=str(tmp_path / "plots"))
    env.pop("OUT", None)
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for step in ("tests", "table1", "speed", "trials", "fig2"):
        assert f"{step}: skipped: no CUDA device here" in p.stdout
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "nonsense"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "valid: install tests table1 speed trials fig2" in bad.stdout
