"""The contract every task fulfils, shared by the training runner and the tests.

A task owns its data, loss, metrics and default optimizer; the model owns only ``forward``.

* ``kind == "tokens"``: inputs are ``(B, L)`` int64 token ids, the model returns ``(B, L, vocab_size)``
  logits, targets are ``(B, L)`` int64 and ``mask`` is ``(B, L)`` bool: the positions that are scored.
* ``kind == "continuous"``: inputs are ``(B, L, d_in)`` float, the model returns ``(B, L, d_out)``,
  targets are ``(B, L, d_out)`` float and ``mask`` is ``(B, L)`` bool.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

CONF_DIR = pathlib.Path(__file__).resolve().parent.parent / "conf"


def register_resolvers() -> None:
    """``${repo:}``: the repository root, used by ``conf/paths`` (relative roots live under it)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("repo"):
        OmegaConf.register_new_resolver("repo", lambda: str(CONF_DIR.parent))


register_resolvers()


@dataclass
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def to(self, device) -> "Batch":
        return Batch(self.inputs.to(device), self.targets.to(device), self.mask.to(device))

    def __iter__(self):  # allows ``x, y, m = batch``
        return iter((self.inputs, self.targets, self.mask))


class Task:
    """Base class. Subclasses set the shape attributes and implement :meth:`sample`."""

    name: str = "task"
    kind: str = "tokens"  # or "continuous"
    seq_len: int
    vocab_size: int | None = None
    d_in: int | None = None
    d_out: int | None = None
    # The metric the sweep reports and whether larger is better.
    primary_metric: str = "accuracy"
    higher_is_better: bool = True
    # Paper defaults; the run config may override any field.
    default_optimizer: dict[str, Any] = {"name": "adam", "lr": 2.4e-3}
    default_batch_size: int = 64
    default_steps: int = 2000

    # --- data ---------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def train_batch(self, step: int, batch_size: int, generator: torch.Generator) -> Batch:
        """A training batch; by default a fresh sample from the generator's stream."""
        return self.sample(batch_size, generator)

    def eval_batch(self, batch_size: int, seed: int) -> Batch:
        """A fixed evaluation batch (same for every call with this seed)."""
        g = torch.Generator().manual_seed(seed)
        return self.sample(batch_size, g)

    def eval_batches(self, batch_size: int, seed: int):
        """The evaluation set as batches (default: one fixed batch). Data-backed tasks override
        this to walk their whole validation split."""
        yield self.eval_batch(batch_size, seed)

    # --- model shapes -------------------------------------------------------------------
    def model_shapes(self) -> dict[str, Any]:
        """Keyword arguments for :func:`models.build_model`."""
        if self.kind == "tokens":
            return {"vocab_size": self.vocab_size, "seq_len": self.seq_len}
        return {"d_in": self.d_in, "d_out": self.d_out, "seq_len": self.seq_len}

    @classmethod
    def shapes_from_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """The :meth:`model_shapes` of ``cls(**cfg)`` without loading data. The default builds the
        task (synthetic tasks are cheap and draw from their own generators); data-backed tasks
        override this."""
        with torch.random.fork_rng(devices=[]):
            return cls(**cfg).model_shapes()

    # --- loss and metrics ---------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.kind == "tokens":
            logits = outputs[batch.mask]
            return F.cross_entropy(logits.float(), batch.targets[batch.mask])
        diff = (outputs - batch.targets)[batch.mask]
        return diff.pow(2).sum(-1).mean()

    @torch.no_grad()
    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        out = {"loss": float(self.loss(outputs, batch))}
        if self.kind == "tokens":
            pred = outputs.argmax(-1)
            correct = (pred == batch.targets) & batch.mask
            out["accuracy"] = float(correct.sum() / batch.mask.sum().clamp_min(1))
            # A sequence is solved when every scored position is right.
            per_seq = (correct | ~batch.mask).all(-1)
            out["seq_accuracy"] = float(per_seq.float().mean())
        else:
            diff = (outputs - batch.targets)[batch.mask]
            out["mse"] = float(diff.pow(2).sum(-1).mean())
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "seq_len": self.seq_len,
            "vocab_size": self.vocab_size,
            "d_in": self.d_in,
            "d_out": self.d_out,
        }


class RandomTask(Task):
    """Random inputs and targets of a task's shapes, with the base class's loss: what timing needs
    (Table I, the speed benchmark) when the time of a step, not what it learns, is measured."""

    name = "random"

    def __init__(self, seq_len: int, d_in: int | None = None, d_out: int | None = None,
                 vocab_size: int | None = None):
        self.seq_len = int(seq_len)
        self.kind = "tokens" if vocab_size else "continuous"
        self.vocab_size, self.d_in, self.d_out = vocab_size, d_in, d_out

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        shape = (batch_size, self.seq_len)
        mask = torch.ones(shape, dtype=torch.bool)
        if self.kind == "tokens":
            x = torch.randint(self.vocab_size, shape, generator=generator)
            return Batch(x, torch.randint(self.vocab_size, shape, generator=generator), mask)
        return Batch(torch.randn(*shape, self.d_in, generator=generator),
                     torch.randn(*shape, self.d_out, generator=generator), mask)


def available_tasks() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))


def task_config(name: str, profile: str = "smoke") -> dict[str, Any]:
    """The resolved config of ``conf/task/<name>.yaml`` as the runner sees it at ``profile`` (its
    interpolations, e.g. the MuJoCo window ``${profile.mujoco_context}``, resolved)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    names = available_tasks()
    if name not in names:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(names)}")
    overrides = [f"task={name}", f"profile={profile}"]
    if GlobalHydra.instance().is_initialized():
        cfg = compose("train", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
    return OmegaConf.to_container(cfg.task, resolve=True)


def build_task(name: str, profile: str = "smoke", **overrides) -> Task:
    """Build the task ``conf/task/<name>.yaml`` (at ``profile``) with fields replaced by ``overrides``."""
    from hydra.utils import instantiate

    cfg = task_config(name, profile)
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        valid = sorted(k for k in cfg if not k.startswith("_"))
        raise ValueError(f"unknown field(s) {unknown} for task {name!r}; valid fields: {', '.join(valid)}")
    cfg.update(overrides)
    return instantiate(cfg, _convert_="all")
