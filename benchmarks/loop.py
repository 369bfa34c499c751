"""THE training step and THE evaluation. Every path of the suite that trains or scores a model goes
through these functions: the runs (``benchmarks/train.py``), the landscapes (Figures 3, 13, 24),
Table I's step times and the speed benchmark (``benchmarks/timing.py``).

One training step (:func:`train_step`)::

    total = task.loss(model(x), batch) + model.aux_loss          (MoE load balancing; 0 without MoE)
    total.backward();  clip ||grad||_2 to ``grad_clip`` (when set);  optimizer.step()

The learning rate of every parameter group is ``base_lr x lr_factor(step)`` (:func:`lr_factor`):
constant, or a linear warm-up over ``warmup_frac`` of the steps followed by a cosine decay to a
tenth (``cosine``) or a linear decay to a tenth (``warmup_linear``, section IV: 3e-4 -> 3e-5).

A step whose task loss is not finite is not applied (no backward, no update) and says so in its
result, so the caller can end the run as diverged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

import models
from tasks.base import Batch

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_linear")


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid dtypes: {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} requested but CUDA is not available here; valid here: auto, cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; valid devices: auto, cpu, cuda, cuda:N")
    return torch.device(name)


# ------------------------------------------------------------------------------------- optimizer
def make_optimizer(model: torch.nn.Module, spec: dict[str, Any], substitute=None) -> torch.optim.Optimizer:
    """The optimizer ``spec['name']`` over :func:`models.param_groups` (special groups such as S4D's
    SSM parameters keep their own lr; 1-D weights get no weight decay). ``substitute(p)``, when
    given, replaces each parameter in the groups (batched trials: its stacked tensor)."""
    name = str(spec["name"]).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    lr = float(spec["lr"])
    wd = float(spec.get("weight_decay") or 0.0)
    groups = models.param_groups(model, lr=lr, weight_decay=wd)
    if substitute is not None:
        groups = [{**g, "params": [substitute(p) for p in g["params"]]} for g in groups]
    betas = tuple(spec["betas"]) if spec.get("betas") else None
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(groups, lr=lr, weight_decay=wd, **({"betas": betas} if betas else {}))
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, weight_decay=wd)
    return torch.optim.SGD(groups, lr=lr, weight_decay=wd, momentum=float(spec.get("momentum") or 0.0))


def lr_factor(step: int, steps: int, schedule: str | None, warmup_frac: float) -> float:
    """Multiplier of the base learning rate at 0-based ``step`` of ``steps``."""
    if schedule in (None, "constant"):
        return 1.0
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    warm = max(1, int(warmup_frac * steps))
    if step < warm:
        return (step + 1) / warm
    frac = (step - warm) / max(1, steps - warm)
    if schedule == "cosine":
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
    return 1.0 - 0.9 * frac  # warmup_linear: linear decay to a tenth


class Schedule:
    """Sets every parameter group's lr to its base lr times :func:`lr_factor` before a step."""

    def __init__(self, opt: torch.optim.Optimizer, steps: int, spec: dict[str, Any]):
        self.opt, self.steps = opt, int(steps)
        self.schedule = spec.get("schedule") or "constant"
        self.warmup_frac = float(spec.get("warmup_frac") or 0.0)
        self.base = [g["lr"] for g in opt.param_groups]

    def set(self, step: int) -> float:
        f = lr_factor(step, self.steps, self.schedule, self.warmup_frac)
        for g, lr0 in zip(self.opt.param_groups, self.base):
            g["lr"] = lr0 * f
        return f


# ------------------------------------------------------------------------------------- one step
def to_device(batch: Batch, device, dtype: torch.dtype) -> Batch:
    """The batch on ``device``; floating inputs and targets in ``dtype`` (token ids stay integers)."""
    batch = batch.to(device)
    if batch.inputs.is_floating_point():
        batch = Batch(batch.inputs.to(dtype), batch.targets.to(dtype), batch.mask)
    return batch


def objective(model: torch.nn.Module, task, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(task loss, auxiliary loss, total)`` of one forward. The auxiliary loss is the model's
    (the weighted MoE load-balancing loss of that forward; zero for models without one)."""
    loss = task.loss(model(batch.inputs), batch)
    aux = getattr(model, "aux_loss", None)
    aux = aux.to(loss.device, loss.dtype) if isinstance(aux, torch.Tensor) else loss.new_zeros(())
    return loss, aux, loss + aux


@dataclass
class StepResult:
    loss: float          # the task loss (what curves and divergence checks use)
    aux: float           # the model's auxiliary loss
    applied: bool        # False when the loss was not finite: no backward, no update
    grad_norm: float | None = None  # before clipping, when clipping is on


def train_step(model: torch.nn.Module, task, batch: Batch, opt: torch.optim.Optimizer,
               grad_clip: float | None = None) -> StepResult:
    """One optimizer step on ``batch`` (already on the model's device and dtype)."""
    loss, aux, total = objective(model, task, batch)
    loss_v, aux_v = float(loss.detach()), float(aux.detach())
    if not (math.isfinite(loss_v) and math.isfinite(aux_v)):
        return StepResult(loss_v, aux_v, False)
    opt.zero_grad(set_to_none=True)
    total.backward()
    norm = None
    if grad_clip:
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip)))
    opt.step()
    return StepResult(loss_v, aux_v, True, norm)


@torch.no_grad()
def evaluate(model: torch.nn.Module, task, batch_size: int, seed: int, device, dtype: torch.dtype) -> dict[str, float]:
    """The task's metrics over its evaluation batches (``task.eval_batches``), each batch weighted
    by its number of scored positions. The model is put in eval mode and restored."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    weight = 0.0
    try:
        for batch in task.eval_batches(batch_size, seed):
            batch = to_device(batch, device, dtype)
            m = task.metrics(model(batch.inputs), batch)
            w = float(batch.mask.sum())
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + v * w
            weight += w
    finally:
        model.train(was_training)
    return {k: v / max(weight, 1.0) for k, v in totals.items()}
