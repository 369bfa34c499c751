"""One registry, and it is the Hydra config groups.

* ``conf/model/<name>.yaml``: a full model (``_target_`` + fields); ``build_model(name, ...)``.
* ``conf/mixer/<name>.yaml``: a sequence mixer (B, L, width) -> (B, L, width); ``build_mixer``.

The file name is the name users type (``model=stu_t``). Adding a baseline: one mixer file under
``models/`` plus ``conf/mixer/<name>.yaml`` (and ``conf/model/<name>.yaml`` to train it alone).

A model file with ``_large_: true`` (a registry key, never passed to the model) is paper-scale
(the section IV language models: hundreds of millions of parameters): ``available_models()`` leaves
it out, since the suite's per-model tests and sweeps build every listed model at its config size;
``available_models(include_large=True)`` lists it and ``build_model`` builds it (on the ``meta``
device under ``with torch.device("meta")`` to count its parameters without memory).
"""
from __future__ import annotations

import importlib
import inspect
import pathlib
from typing import Any

import torch.nn as nn
from omegaconf import OmegaConf

CONF_DIR = pathlib.Path(__file__).resolve().parent.parent / "conf"

__all__ = [
    "build_model", "build_mixer", "available_models", "available_mixers", "model_config",
    "backends", "param_groups", "count_params", "is_large",
]


REGISTRY_KEYS = ("_large_",)  # keys of a conf/model file read by the registry, never passed to the model
_LARGE_CACHE: dict = {}


def is_large(name: str) -> bool:
    """Whether ``conf/model/<name>.yaml`` says ``_large_: true`` (paper-scale; see the module doc)."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _LARGE_CACHE:
        _LARGE_CACHE[key] = bool(OmegaConf.load(path).get("_large_", False))
    return _LARGE_CACHE[key]


def available_models(include_large: bool = False) -> list[str]:
    """Names of ``conf/model/*.yaml`` (files starting with ``_`` are bases, not models); the
    paper-scale ones (``_large_: true``) only with ``include_large``."""
    names = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if not p.stem.startswith("_"))
    return names if include_large else [n for n in names if not is_large(n)]


def available_mixers() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "mixer").glob("*.yaml") if not p.stem.startswith("_"))


def _read(group: str, name: str):
    """``conf/<group>/<name>.yaml`` with its ``defaults`` list merged in Hydra's order (entries are
    files of the same group; ``_self_`` marks where the file's own keys go, last by default)."""
    raw = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
    defaults = list(raw.pop("defaults", None) or [])
    merged = OmegaConf.create()
    if "_self_" not in defaults:
        defaults.append("_self_")
    for entry in defaults:
        merged = OmegaConf.merge(merged, raw if entry == "_self_" else _read(group, str(entry)))
    return merged


def _locate(path: str):
    module, _, attr = path.rpartition(".")
    if not module:
        raise ValueError(f"not a dotted import path: {path!r}")
    return getattr(importlib.import_module(module), attr)


def _load(group: str, name: str, regime: str = "ours") -> dict[str, Any]:
    """The resolved config; the robotics models' ``${regime.model.*}`` fields resolve against
    ``conf/regime/<regime>.yaml`` (the registry's view: the suite's own regime, ``ours``)."""
    valid = available_models(include_large=True) if group == "model" else available_mixers()
    if name not in valid:
        raise ValueError(f"unknown {group} {name!r}; valid {group}s: {', '.join(valid)}")
    root = OmegaConf.create({"regime": OmegaConf.load(CONF_DIR / "regime" / f"{regime}.yaml").regime,
                             "cfg": _read(group, name)})
    cfg = OmegaConf.to_container(root.cfg, resolve=True)
    for key in REGISTRY_KEYS:
        cfg.pop(key, None)
    return cfg


def _instantiate(cfg: dict[str, Any], what: str, **fixed) -> nn.Module:
    cfg = {k: v for k, v in cfg.items() if k not in REGISTRY_KEYS}  # e.g. a Hydra-composed cfg.model
    cls = _locate(cfg.pop("_target_"))
    accepted = inspect.signature(cls).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(k for k in cfg if k not in accepted and not takes_kwargs)
    if unknown:
        valid = sorted(k for k in accepted if k not in fixed and k != "self")
        raise ValueError(f"unknown field(s) {unknown} for {what}; valid fields: {', '.join(valid)}")
    return cls(**fixed, **cfg)


def model_config(name: str, **overrides) -> dict[str, Any]:
    """The config of ``conf/model/<name>.yaml`` with ``overrides`` applied (checked)."""
    cfg = _load("model", name)
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        cls = _locate(cfg["_target_"])
        accepted = set(inspect.signature(cls).parameters) - {"seq_len", "d_in", "d_out", "vocab_size"}
        bad = sorted(k for k in unknown if k not in accepted)
        if bad:
            raise ValueError(f"unknown field(s) {bad} for model {name!r}; valid fields: {', '.join(sorted(accepted))}")
    cfg.update(overrides)
    return cfg


def build_model(name: str, *, d_in: int | None = None, d_out: int | None = None,
                vocab_size: int | None = None, seq_len: int, **overrides) -> nn.Module:
    """Build ``conf/model/<name>.yaml`` for continuous input ``(B, L, d_in) -> (B, L, d_out)`` or
    token input ``(B, L) -> (B, L, vocab_size)`` logits; ``overrides`` replace its fields."""
    cfg = model_config(name, **overrides)
    shapes = {"seq_len": seq_len}
    if vocab_size is not None:
        shapes["vocab_size"] = vocab_size
    else:
        if d_in is None or d_out is None:
            raise ValueError("build_model needs vocab_size, or d_in and d_out")
        shapes.update(d_in=d_in, d_out=d_out)
    model = _instantiate(cfg, f"model {name!r}", **shapes)
    model.registry_name = name
    return model


def build_mixer(name: str, *, width: int, seq_len: int, **overrides) -> nn.Module:
    """A causal mixer (B, L, width) -> (B, L, width) for any L <= seq_len.

    ``name`` is a ``conf/mixer/<name>.yaml`` or a dotted path to a mixer class."""
    if "." in name:
        cfg = {"_target_": name}
    else:
        cfg = _load("mixer", name)
    cfg.update(overrides)
    return _instantiate(cfg, f"mixer {name!r}", width=width, seq_len=seq_len)


def backends(model: nn.Module) -> str:
    """The backends the last forward used, e.g. ``attention=sdpa,fft=torch`` (never hides a fallback)."""
    found = set()
    for m in model.modules():
        b = getattr(m, "backend", None)
        if isinstance(b, str):
            found.update(part for part in b.split(",") if part)
    return ",".join(sorted(found))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Optimizer groups: parameters carrying ``_optim`` (e.g. S4D's SSM parameters, lr <= 1e-3 and
    no weight decay, as in the official S4 code) get their own group; 1-D weights get no decay."""
    default, no_decay, special = [], [], {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        hp = getattr(p, "_optim", None)
        if hp:
            special.setdefault(tuple(sorted(hp.items())), []).append(p)
        elif p.dim() < 2:
            no_decay.append(p)
        else:
            default.append(p)
    groups = [{"params": default, "lr": lr, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    for hp, params in special.items():
        g = {"params": params, "lr": lr, "weight_decay": weight_decay}
        g.update({k: v for k, v in hp if v is not None})
        groups.append(g)
    return [g for g in groups if g["params"]]
