"""The README's commands exist: every make target it names is defined, every `python -m` module
imports, and every config it names is in conf/. (The commands themselves run in other tests.)"""
import importlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make reproduce-table2" in first_block and "make test" in first_block
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_targets_in_readme_exist():
    targets = {t for t in re.findall(r"(?:^|`)make ([a-z][a-z0-9-]+)", README, flags=re.M) if not t.endswith("-")}
    defined = set(re.findall(r"^([a-z][a-z0-9-]+):", MAKEFILE, flags=re.M))
    # the generic rule reproduce-%: one target per conf/experiment/<E>.yaml
    assert re.search(r"^reproduce-%:", MAKEFILE, flags=re.M)
    defined |= {f"reproduce-{p.stem}" for p in (ROOT / "conf" / "experiment").glob("[!_]*.yaml")}
    assert targets, "README names make targets"
    assert targets <= defined, f"README names undefined make targets: {sorted(targets - defined)}"


def test_python_modules_in_readme_import():
    mods = set(re.findall(r"python -m ([a-z_.]+)", README))
    assert "benchmarks.train" in mods
    for m in sorted(mods):
        if m in ("pytest", "pip"):
            continue
        importlib.import_module(m)


def test_configs_in_readme_exist():
    for group in ("model", "experiment", "task"):
        for name in set(re.findall(rf"\b{group}=([a-z0-9_]+)", README)):
            assert (ROOT / "conf" / group / f"{name}.yaml").exists(), f"README names {group}={name}"
