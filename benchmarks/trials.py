"""Several trials (seeds) of one (model, task) trained together, as one batched computation.

    python -m benchmarks.train model=stu task=lds seed=0 trial_batch=16 batch_trials=true

A run with ``trial_batch=N`` trains the seeds ``seed .. seed+N-1`` (never a seed >= ``trials``
other than ``seed`` itself: an experiment's sweep is ``seed=range(0, trials, trial_batch)``). Each
trial is exactly the run it would be alone: its own initialisation (``torch.manual_seed(seed)``
before the model is built), its own task (a new LDS system per trial), its own data stream (a
generator seeded with its seed), its own optimizer state, its own gradient clipping, its own
record, curve and checkpoint in its own fingerprint folder. Only the arithmetic is shared:

* the N models' parameters are stacked along a new leading dimension and the forward is
  ``torch.func.vmap`` over ``functional_call`` of one module (:class:`TrialStack`);
* the task loss is computed per trial on its slice of the output (the task's own ``loss``) and the
  sum is differentiated, so each slice of a stacked gradient is that trial's gradient;
* the optimizer works elementwise (Adam, AdamW, RMSProp, SGD), so one optimizer over the stacked
  parameters is N independent optimizers; clipping uses each trial's own gradient norm
  (:func:`clip_per_trial`);
* evaluation copies a trial's slice back into its own module and calls THE ``evaluate``.

Checkpoints are written per trial in the one-by-one format (:meth:`TrialStack.trial_checkpoint`), so
a killed batched run resumes batched or one by one, and a one-by-one checkpoint resumes batched.

``batch_trials``: ``auto`` batches on CUDA only (on the 2-core CPU batching is slower: the steps are
memory-bound there, see ``benchmarks/trial_batching.py``), ``true`` batches wherever the model can
be batched, ``false`` never. A model that cannot be batched (a mixture of experts routes tokens by
data-dependent indexing; anything vmap refuses) trains its trials one by one, and its records say
so and why.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn
from omegaconf import DictConfig, open_dict

BATCH_TRIALS = ("auto", "true", "false")


# ------------------------------------------------------------------------------------------ config
def trial_seeds(cfg: DictConfig) -> list[int]:
    """The seeds a run trains: ``seed .. seed+trial_batch-1``, none >= ``trials`` but ``seed``."""
    first = int(cfg.seed)
    n = int(cfg.get("trial_batch") or 1)
    seeds = [first + i for i in range(n)]
    limit = cfg.get("trials")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
        seeds = [s for s in seeds if s < limit] or [first]
    return seeds


def batch_trials_setting(value: Any) -> str:
    """``auto`` | ``true`` | ``false`` (Hydra parses true/false as booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).lower()
    if text not in BATCH_TRIALS:
        from benchmarks.config import ConfigError

        raise ConfigError(f"batch_trials must be one of {', '.join(BATCH_TRIALS)}; got {value!r}")
    return text


def wants_batching(cfg: DictConfig, device: torch.device) -> bool:
    setting = batch_trials_setting(cfg.get("batch_trials", "auto"))
    return setting == "true" or (setting == "auto" and device.type == "cuda")


def with_seed(cfg: DictConfig, seed: int) -> DictConfig:
    """A copy of ``cfg`` with ``seed`` replaced (``${seed}`` interpolations follow)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.seed = int(seed)
    return out


def seed_overrides(overrides: list[str], seed: int) -> list[str]:
    """``overrides`` with its ``seed=`` entry replaced by ``seed``."""
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed"]
    return keep + [f"seed={int(seed)}"]


# --------------------------------------------------------------------------------------- batching
def why_not_batchable(model: nn.Module) -> str | None:
    """Why the trials of this model cannot be one vmapped computation (None: they can)."""
    from models.blocks import MoE

    if any(isinstance(m, MoE) for m in model.modules()):
        return "a mixture of experts routes tokens by data-dependent indexing, which vmap cannot batch"
    return None


class TrialStack:
    """N modules of one architecture as one batched function of stacked parameters.

    ``models[i]`` keeps trial i's module (used for evaluation, records and checkpoints); the
    stacked tensors ``params`` / ``buffers`` (leading dimension N) are what trains."""

    def __init__(self, models: list[nn.Module]):
        if len(models) < 1:
            raise ValueError("TrialStack needs at least one model")
        self.models = models
        self.n = len(models)
        self.shell = models[0]
        names = [n for n, _ in self.shell.named_parameters()]
        per = [dict(m.named_parameters()) for m in models]
        self.params = {n: torch.stack([p[n].detach() for p in per]).clone().requires_grad_(per[0][n].requires_grad)
                       for n in names}
        bufs = [dict(m.named_buffers()) for m in models]
        self.buffers = {n: torch.stack([b[n] for b in bufs]).clone() for n in bufs[0]}
        self._name_of = {id(p): n for n, p in self.shell.named_parameters()}
        self.plain_paths: list[str] = []  # optional kernels the batched computation switched off

    # -- the forward of all trials
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, B, ...) -> outputs (N, B, ...), trial i through trial i's parameters."""
        from torch.func import functional_call, vmap

        def one(p, b, xi):
            return functional_call(self.shell, (p, b), (xi,))

        with warnings.catch_warnings(), self.plain_kernels():
            # vmap runs SDPA through its slower per-trial fallback on CPU
            warnings.filterwarnings("ignore", message=".*not yet implemented the batching rule.*")
            return vmap(one, randomness="error")(self.params, self.buffers, x)

    @contextlib.contextmanager
    def plain_kernels(self):
        """The batched computation runs each layer's plain PyTorch path: the optional kernels
        (mamba_ssm's Triton SSD, flashfftconv, flash-attn) are autograd functions with no vmap rule,
        and on CUDA SDPA's fused kernels fail in the backward under vmap ("LSE is not correctly
        aligned"), so SDPA runs its math backend. The plain paths equal the kernels to rounding
        (tests/test_gpu_paths.py); ``self.plain_paths`` names what was switched (the records say it)."""
        if not self.on_cuda():  # the optional kernels run on CUDA only; nothing to switch
            yield
            return
        switched = []
        for m in self.shell.modules():
            for attr in PLAIN_SWITCHES:
                if getattr(m, attr, None) is True:
                    setattr(m, attr, False)
                    switched.append((m, attr))
                    label = f"{type(m).__name__}.{attr}=false"
                    if label not in self.plain_paths:
                        self.plain_paths.append(label)
        if "sdpa=math" not in self.plain_paths and any(
                "attention" in type(m).__name__.lower() for m in self.shell.modules()):
            self.plain_paths.append("sdpa=math")
        from torch.nn.attention import SDPBackend, sdpa_kernel
        try:
            with sdpa_kernel([SDPBackend.MATH]):
                yield
        finally:
            for m, attr in switched:
                setattr(m, attr, True)

    def on_cuda(self) -> bool:
        return any(p.is_cuda for p in self.params.values())

    def probe(self, x: torch.Tensor) -> str | None:
        """Run one forward and backward on ``x`` (no parameter changes); the error vmap raises, if any."""
        try:
            out = self.forward(x)
            grads = torch.autograd.grad(out.float().sum(), [p for p in self.params.values() if p.requires_grad],
                                        allow_unused=True)
            del grads
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return None

    # -- optimizer over the stacked parameters
    def optimizer(self, make: Callable[..., torch.optim.Optimizer], spec: dict[str, Any]) -> torch.optim.Optimizer:
        """``make(shell, spec, substitute)``: the trial optimizer's groups (special lr groups,
        no decay on 1-D weights: decided on the per-trial shapes) over the stacked tensors."""
        return make(self.shell, spec, substitute=lambda p: self.params[self._name_of[id(p)]])

    # -- moving between the stack and the per-trial modules
    @torch.no_grad()
    def write_back(self, i: int) -> nn.Module:
        """Copy trial i's slice into ``models[i]``; return it."""
        own = dict(self.models[i].named_parameters())
        for n, p in self.params.items():
            own[n].copy_(p[i])
        own_b = dict(self.models[i].named_buffers())
        for n, b in self.buffers.items():
            own_b[n].copy_(b[i])
        return self.models[i]

    def trial_optimizer_state(self, i: int, opt: torch.optim.Optimizer, trial_opt: torch.optim.Optimizer) -> dict:
        """Trial i's part of ``opt`` (over the stack) as the state dict of ``trial_opt`` (an optimizer
        made the one-by-one way over ``models[i]``)."""
        trial_opt.state.clear()
        for n, p in self.models[i].named_parameters():
            st = opt.state.get(self.params[n])
            if not st:
                continue
            trial_opt.state[p] = {k: (v[i].clone() if _stacked(v, self.params[n]) else
                                      (v.clone() if isinstance(v, torch.Tensor) else v)) for k, v in st.items()}
        return trial_opt.state_dict()

    def load_optimizer_states(self, opt: torch.optim.Optimizer, trial_opts: list[torch.optim.Optimizer]) -> None:
        """The inverse: stack the per-trial optimizers' states (same step) into ``opt``."""
        for n, P in self.params.items():
            states = [o.state.get(dict(m.named_parameters())[n]) for o, m in zip(trial_opts, self.models)]
            if not all(states):
                continue
            merged = {}
            for k, v in states[0].items():
                if isinstance(v, torch.Tensor) and v.shape == P.shape[1:] and v.dim() > 0:
                    merged[k] = torch.stack([s[k] for s in states]).to(P.device)
                else:
                    merged[k] = v.clone() if isinstance(v, torch.Tensor) else v
            opt.state[P] = merged

    def reload_from_models(self) -> None:
        """Re-stack ``params`` and ``buffers`` from the per-trial modules (after loading checkpoints)."""
        with torch.no_grad():
            per = [dict(m.named_parameters()) for m in self.models]
            for n, P in self.params.items():
                P.copy_(torch.stack([p[n] for p in per]))
            bufs = [dict(m.named_buffers()) for m in self.models]
            for n, B in self.buffers.items():
                B.copy_(torch.stack([b[n] for b in bufs]))


def _stacked(v: Any, P: torch.Tensor) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape == P.shape


@torch.no_grad()
def clip_per_trial(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each trial's gradient (slice i of every stacked gradient) to 2-norm ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` does for one model; return the N norms before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    per_param = torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), 2.0, dim=1) for g in grads])
    norms = torch.linalg.vector_norm(per_param, 2.0, dim=0)  # (N,)
    coef = torch.clamp(float(max_norm) / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))
    return norms


def batched_step(stack: TrialStack, tasks: list, batches: list, opt: torch.optim.Optimizer,
                 grad_clip: float | None, active: list[bool]) -> list[float]:
    """One optimizer step of every trial: ``loss_i = tasks[i].loss(output_i, batches[i])`` (the
    task's own loss on trial i's slice), the sum over the active trials with a finite loss is
    differentiated, each trial's gradient clipped on its own, one step of the stacked optimizer.
    Returns the N task losses (a trial whose loss is not finite is left out of the step, as the
    one-by-one step is not applied)."""
    x = torch.stack([b.inputs for b in batches])
    outs = stack.forward(x).unbind(0)
    losses = [t.loss(o, b) for t, o, b in zip(tasks, outs, batches)]
    vals = [float(v) for v in torch.stack([l.detach().float() for l in losses]).tolist()]
    total = None
    for i, (loss, v) in enumerate(zip(losses, vals)):
        if active[i] and v == v and abs(v) != float("inf"):
            total = loss if total is None else total + loss
    if total is not None:
        opt.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip:
            clip_per_trial(list(stack.params.values()), float(grad_clip))
        opt.step()
    return vals


# module flags of optional kernels that vmap cannot batch (see TrialStack.plain_kernels)
PLAIN_SWITCHES = ("use_fast_path", "use_flashfftconv", "use_flash_attn")


def describe(mode: str, seeds: list[int], reason: str = "", **extra) -> dict[str, Any]:
    """The ``trials`` entry of a record."""
    return {"mode": mode, "seeds": [int(s) for s in seeds], "reason": reason, **extra}
