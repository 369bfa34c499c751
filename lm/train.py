"""Language-model pretraining (section IV of the Flash STU paper, issue 13): one code path, FSDP2, on
1 to N processes (a Hydra app on ``conf/lm_train.yaml``).

    python -m lm.train [profile=smoke|paper] [model=<conf/model name>] [model.width=64] [steps=...] ...
    torchrun --nproc_per_node=N -m lm.train ...            # N processes on one machine (gloo on CPU, NCCL on GPUs)
    sbatch scripts/slurm_lm.sh profile=paper model=lm_flash_stu # Slurm: srun + torchrun (see the script)

Rerunning the same command (with any number of processes) resumes from the run folder's latest
checkpoint; a finished run is left as it is (``overwrite=true`` starts again). A bad setting stops
with ``error: ...`` (exit 1) before a process group, a model or a file is made.

**What a step does.** The global batch is ``global_batch_tokens / seq_len`` sequences (G). Each of
the W processes runs ``accumulation = G / (micro_batch x W)`` forward/backward passes of
``micro_batch`` sequences, the loss of each pass being its mean token cross-entropy (plus a MoE
model's load-balancing loss) divided by the accumulation; FSDP2 averages the gradients over the
processes, so the update uses the mean over the G sequences whatever W is. Then the global gradient
norm is clipped to ``grad_clip`` (``clip_grad_norm_`` on the DTensor parameters) and AdamW steps
with the learning rate of :func:`lr_at`.

**Data.** Training windows are random ``seq_len + 1``-token slices of the training split (as
:meth:`lm.shards.TokenShards.get_batch`), but drawn for the whole global batch at once from a
generator seeded by (seed, step) (:func:`global_starts`); process r takes the r-th contiguous
``G / W`` of them (:func:`rank_starts`). The global batch of a step is therefore the same set of
sequences for any number of processes (that is why 2 processes equal 1 up to float rounding), the
data position of a checkpoint is its step, and nothing else needs saving to resume the stream.
Validation uses the first ``eval.sequences`` consecutive windows of the validation split (those of
:meth:`TokenShards.sequential`), split among the processes (padded so every process runs the same
number of forwards); reported: mean token loss and perplexity ``exp(loss)``.

**Model and precision.** ``model=<name>`` is any token model of the registry (``conf/model``),
``model.<field>=`` overrides its fields; its ``vocab_size`` is the data's (the smoke profile's
remapped 22,275 ids, or o200k_base's 200,019; the model's own ``vocab_multiple`` pads its rows,
as the paper's 200,064, and its logits cover the real ids). Every
process builds the full model from ``seed`` and shards it: ``fully_shard`` on each block, then on
the root (also for one process, so the code path is the same). On CUDA: NCCL, parameters in bf16 for
compute with fp32 gradient reduction (``MixedPrecisionPolicy(bfloat16, float32)``; the sharded
master weights and the optimizer stay fp32), fused AdamW; on CPU: gloo, float32.
``distributed.activation_checkpointing`` recomputes each block in the backward
(``checkpoint_wrapper``, non-reentrant).

**Optimizer** (the paper, Table XI, and the authors' ``training/example.py``): AdamW with
PyTorch's defaults (betas 0.9/0.999, eps 1e-8, weight decay 0.01), over ``model.parameters()`` --
the authors decay every parameter, 1-D norm gains and the (tied) embedding included, so
``optimizer.decay_1d`` is true by default; ``optimizer.model_hints=true`` honours the models'
per-parameter hints instead (Mamba-2's A_log, D and dt_bias without decay, as the official Mamba
code). Learning rate (the authors' ``linear_decay_with_warmup``): for update t = 1..steps with
``W = round(warmup_frac x steps)`` warm-up updates, ``min_lr + (lr - min_lr) t / W`` while t < W,
then ``lr - (lr - min_lr)(t - W)/(steps - W)``: 3e-5 -> 3e-4 over the first 10%, then down to 3e-5
at the last step.

**Outputs**, in ``<paths.runs>/lm/<profile>/<model>/<label>/`` (label: ``s<seed>-<fingerprint>``,
the fingerprint of the settings that decide the results -- model, data, sequence and batch sizes,
steps, seed, optimizer -- and not of the number of processes, the micro batch, the precision or
the schedule of evaluations and checkpoints, so a resumed run finds its folder):

- ``record.json``: config, model (name, fields, parameters), seed, world size, device, versions, git
  commit (and ``git.diff`` when the code was dirty), data provenance (``TokenShards.provenance``),
  tokens/s, wall time, the final validation loss and perplexity, the segments the run was trained
  in (each invocation: steps, processes, device, tokens/s); status running | stopped | complete;
- ``curve.csv``: per step (every ``log_every``) tokens, loss, lr, grad norm, tokens/s; validation
  loss and perplexity at the evaluation steps (step 0: the initial model);
- ``checkpoints/step_N/`` (:mod:`lm.checkpoint`): every ``checkpoint.every`` steps, at ``stop_after``,
  on SIGTERM/SIGUSR1 (at the end of the current step) and after the last step; DCP, resharded on
  load, so a run saved by 8 processes resumes on 1, and ``python -m lm.sample`` reads it.
"""
from __future__ import annotations

import datetime
import hashlib
import math
import os
import pathlib
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lm import REPO
from lm import checkpoint as ckpt

CONF_DIR = REPO / "conf"
RECORD = "record.json"
CURVE = "curve.csv"
FORMAT = "flash-stu-bench/lm-train-run"


class TrainConfigError(ValueError):
    """A config that cannot run; the message names the key and what is valid."""


# ------------------------------------------------------------------------------------------ settings
def _int(key: str, v, minimum: int = 1, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TrainConfigError(f"{key} must be an integer >= {minimum}{' or null' if allow_none else ''}, got {v!r}")
    if v < minimum:
        raise TrainConfigError(f"{key} must be >= {minimum}, got {v}")
    return int(v)


def _num(key: str, v, lo: float | None = 0.0, hi: float | None = None, lo_open: bool = False,
         hi_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise TrainConfigError(f"{key} must be a finite number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise TrainConfigError(f"{key} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise TrainConfigError(f"{key} must be {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def _choice(key: str, v, valid) -> Any:
    if v not in valid:
        raise TrainConfigError(f"{key} must be one of {', '.join(map(str, valid))}; got {v!r}")
    return v


@dataclass
class Plan:
    """The resolved, checked settings of a run (everything decided before any work)."""
    model_name: str
    model_fields: dict
    data_root: str
    remapped: bool
    verify: bool
    seq_len: int
    global_batch_tokens: int
    global_sequences: int
    micro_batch: int
    accumulation: int
    world_size: int
    steps: int
    seed: int
    optimizer: dict
    grad_clip: float | None
    eval_every: int
    eval_sequences: int
    eval_micro_batch: int
    eval_at_start: bool
    checkpoint_every: int
    keep: int
    device: str
    precision: str
    activation_checkpointing: bool
    reshard_after_forward: bool
    sync_each_micro_step: bool
    timeout_s: int
    label: str | None
    resume: str
    overwrite: bool
    stop_after: int | None
    threads: int | None
    progress: bool
    log_every: int
    profile: str
    runs_root: str
    config: dict = field(repr=False, default_factory=dict)
    # filled by prepare(): data and the run folder
    vocab_size: int = 0
    train_tokens: int = 0
    val_windows: int = 0
    data_manifest_sha256: str = ""
    fingerprint: str = ""
    run_dir: str = ""

    def identity(self) -> dict:
        """The settings that decide the results (the fingerprint and the resume check)."""
        return {"format": FORMAT, "model": self.model_name, "model_fields": self.model_fields,
                "vocab_size": self.vocab_size, "data": {"manifest_sha256": self.data_manifest_sha256,
                                                        "remapped": self.remapped},
                "seq_len": self.seq_len, "global_batch_tokens": self.global_batch_tokens, "steps": self.steps,
                "seed": self.seed, "optimizer": self.optimizer, "grad_clip": self.grad_clip,
                "eval_sequences": self.eval_sequences}


def _short_hash(obj) -> str:
    import json

    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def model_name_of(cfg) -> str:
    """The ``model=`` choice (Hydra's runtime choices; ``model_name`` in a hand-made config)."""
    from omegaconf import OmegaConf

    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices["model"])
    except (ValueError, KeyError):
        pass
    got = OmegaConf.select(cfg, "hydra.runtime.choices.model", default=None) if "hydra" in cfg else None
    if got is not None:
        return str(got)
    if cfg.get("model_name"):
        return str(cfg.model_name)
    raise TrainConfigError("cannot tell which model= was chosen (no Hydra runtime choices, no model_name)")


def plan(cfg, model_name: str | None = None, world_size: int | None = None) -> Plan:
    """Check ``cfg`` and resolve its settings (no data read, nothing written)."""
    from omegaconf import OmegaConf

    import models

    name = model_name or model_name_of(cfg)
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    try:
        c = OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
    except Exception as e:  # noqa: BLE001 -- an interpolation that does not resolve
        raise TrainConfigError(f"the config does not resolve: {e}") from None
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))

    try:
        valid = models.available_models(include_large=True)
    except TypeError:  # a registry without paper-scale models
        valid = models.available_models()
    if name not in valid:
        raise TrainConfigError(f"unknown model {name!r}; valid models: {', '.join(valid)}")
    skip = {"_target_", *getattr(models, "REGISTRY_KEYS", ("_large_",))}
    fields = {k: v for k, v in (c.get("model") or {}).items() if k not in skip}
    try:
        full = models.model_config(name, **fields)
    except ValueError as e:
        raise TrainConfigError(f"model: {e}") from None
    target = str(full.get("_target_", ""))
    if not target.endswith("SequenceModel"):
        raise TrainConfigError(f"model {name!r} ({target}) is not a token model of models.backbone.SequenceModel")

    seq_len = _int("seq_len", c.get("seq_len"))
    gbt = _int("global_batch_tokens", c.get("global_batch_tokens"))
    if gbt % seq_len:
        raise TrainConfigError(f"global_batch_tokens={gbt} is not a multiple of seq_len={seq_len}")
    g = gbt // seq_len
    mb = _int("micro_batch", c.get("micro_batch"))
    if g % (mb * world):
        raise TrainConfigError(f"the global batch of {g} sequences (global_batch_tokens={gbt} / seq_len={seq_len}) "
                               f"is not a multiple of micro_batch x processes = {mb} x {world}; choose micro_batch "
                               f"among {[d for d in range(1, g // world + 1) if g % (d * world) == 0] or 'none'}")
    steps = _int("steps", c.get("steps"))

    o = c.get("optimizer") or {}
    known_o = {"lr", "min_lr", "warmup_frac", "betas", "eps", "weight_decay", "decay_1d", "model_hints", "fused"}
    if set(o) - known_o:
        raise TrainConfigError(f"unknown optimizer key(s) {sorted(set(o) - known_o)}; known: {sorted(known_o)}")
    lr = _num("optimizer.lr", o.get("lr"), 0.0, lo_open=True)
    min_lr = _num("optimizer.min_lr", o.get("min_lr"), 0.0, lr)
    betas = o.get("betas")
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise TrainConfigError(f"optimizer.betas must be two numbers in [0, 1), got {betas!r}")
    betas = [_num(f"optimizer.betas[{i}]", b, 0.0, 1.0, hi_open=True) for i, b in enumerate(betas)]
    optimizer = {
        "name": "adamw", "lr": lr, "min_lr": min_lr,
        "warmup_frac": _num("optimizer.warmup_frac", o.get("warmup_frac"), 0.0, 1.0, hi_open=True),
        "betas": betas, "eps": _num("optimizer.eps", o.get("eps"), 0.0, lo_open=True),
        "weight_decay": _num("optimizer.weight_decay", o.get("weight_decay"), 0.0),
        "decay_1d": bool(_choice("optimizer.decay_1d", o.get("decay_1d"), (True, False))),
        "model_hints": bool(_choice("optimizer.model_hints", o.get("model_hints"), (True, False))),
        "schedule": "linear warm-up from min_lr, then linear decay to min_lr (authors' linear_decay_with_warmup)",
    }
    fused = _choice("optimizer.fused", o.get("fused"), ("auto", True, False))
    clip = c.get("grad_clip")
    clip = None if clip in (None, 0, 0.0) else _num("grad_clip", clip, 0.0, lo_open=True)

    ev = c.get("eval") or {}
    ck = c.get("checkpoint") or {}
    dd = c.get("distributed") or {}
    for key, sect, known in (("eval", ev, {"every", "sequences", "micro_batch", "at_start"}),
                             ("checkpoint", ck, {"every", "keep"}),
                             ("distributed", dd, {"device", "precision", "activation_checkpointing",
                                                  "reshard_after_forward", "sync_each_micro_step", "timeout_s"}),
                             ("data", c.get("data") or {}, {"root", "remapped", "verify"})):
        if set(sect) - known:
            raise TrainConfigError(f"unknown {key} key(s) {sorted(set(sect) - known)}; known: {sorted(known)}")
    device = _choice("distributed.device", dd.get("device"), ("auto", "cpu", "cuda"))
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise TrainConfigError("distributed.device=cuda but CUDA is not available here; valid here: auto, cpu")
    device = ("cuda" if cuda else "cpu") if device == "auto" else device
    precision = _choice("distributed.precision", dd.get("precision"), ("auto", "bf16", "float32"))
    precision = ("bf16" if device == "cuda" else "float32") if precision == "auto" else precision
    optimizer["fused"] = (device == "cuda") if fused == "auto" else bool(fused)
    if optimizer["fused"] and device != "cuda":
        raise TrainConfigError("optimizer.fused=true is for CUDA; on CPU use auto or false")

    label = c.get("label")
    if label is not None:
        label = str(label)
        if not label or "/" in label or label.startswith("."):
            raise TrainConfigError(f"label must be a plain folder name, got {label!r}")
    stop_after = _int("stop_after", c.get("stop_after"), 1, allow_none=True)
    data = c.get("data") or {}
    if not data.get("root"):
        raise TrainConfigError("data.root must name a token-shard folder (python -m lm.data)")
    eval_mb = _int("eval.micro_batch", ev.get("micro_batch"), 1, allow_none=True) or mb
    p = Plan(
        model_name=name, model_fields=dict(sorted(full.items())), data_root=str(data["root"]),
        remapped=bool(_choice("data.remapped", data.get("remapped"), (True, False))),
        verify=bool(_choice("data.verify", data.get("verify"), (True, False))),
        seq_len=seq_len, global_batch_tokens=gbt, global_sequences=g, micro_batch=mb,
        accumulation=g // (mb * world), world_size=world, steps=steps,
        seed=_int("seed", c.get("seed"), 0), optimizer=optimizer, grad_clip=clip,
        eval_every=_int("eval.every", ev.get("every"), 0), eval_sequences=_int("eval.sequences", ev.get("sequences")),
        eval_micro_batch=eval_mb, eval_at_start=bool(_choice("eval.at_start", ev.get("at_start"), (True, False))),
        checkpoint_every=_int("checkpoint.every", ck.get("every"), 0), keep=_int("checkpoint.keep", ck.get("keep")),
        device=device, precision=precision,
        activation_checkpointing=bool(_choice("distributed.activation_checkpointing",
                                              dd.get("activation_checkpointing"), (True, False))),
        reshard_after_forward=bool(_choice("distributed.reshard_after_forward", dd.get("reshard_after_forward"),
                                           (True, False))),
        sync_each_micro_step=bool(_choice("distributed.sync_each_micro_step", dd.get("sync_each_micro_step"),
                                          (True, False))),
        timeout_s=_int("distributed.timeout_s", dd.get("timeout_s")),
        label=label, resume=_choice("resume", c.get("resume"), ("auto", "never")),
        overwrite=bool(_choice("overwrite", c.get("overwrite"), (True, False))),
        stop_after=stop_after, threads=_int("threads", c.get("threads"), 1, allow_none=True),
        progress=bool(c.get("progress", True)), log_every=_int("log_every", c.get("log_every")),
        profile=str((c.get("profile") or {}).get("name", "adhoc")),
        runs_root=str((c.get("paths") or {}).get("runs", REPO / "runs")),
        config=c,
    )
    if stop_after is not None and stop_after > steps:
        raise TrainConfigError(f"stop_after={stop_after} is after the last step ({steps})")
    return p


def prepare(p: Plan) -> tuple[Any, Any]:
    """Open the data (checked), fix the vocabulary, fingerprint and run folder. Returns the training
    and validation :class:`lm.shards.TokenShards`. Raises :class:`TrainConfigError`."""
    from lm.shards import ShardError, TokenShards

    try:
        train = TokenShards(p.data_root, "train", remapped=p.remapped, verify=p.verify)
        val = TokenShards(p.data_root, "val", remapped=p.remapped, verify=p.verify)
    except ShardError as e:
        raise TrainConfigError(f"data: {e}") from None
    if p.seq_len + 1 > len(train):
        raise TrainConfigError(f"seq_len={p.seq_len} needs {p.seq_len + 1} training tokens; the split has {len(train)}")
    n_val = (len(val) - 1) // p.seq_len
    if p.eval_sequences > n_val:
        raise TrainConfigError(f"eval.sequences={p.eval_sequences} windows of {p.seq_len} tokens: the validation "
                               f"split has {n_val}")
    p.vocab_size = int(train.vocab_size)
    p.train_tokens, p.val_windows = len(train), n_val
    p.data_manifest_sha256 = train.provenance()["manifest_sha256"]
    p.fingerprint = _short_hash(p.identity())
    label = p.label or f"s{p.seed}-{p.fingerprint}"
    p.run_dir = str(pathlib.Path(p.runs_root) / "lm" / p.profile / p.model_name / label)
    return train, val


def run_state(p: Plan) -> tuple[str, tuple[int, pathlib.Path] | None]:
    """What the run folder holds: ("fresh" | "resume" | "complete", latest checkpoint). Raises
    :class:`TrainConfigError` for a folder of other settings or ``resume=never`` with a checkpoint."""
    import json

    run = pathlib.Path(p.run_dir)
    if p.overwrite or not run.exists():
        return "fresh", None
    rec = run / RECORD
    if rec.is_file():
        try:
            r = json.loads(rec.read_text())
        except json.JSONDecodeError:
            r = {}
        if r.get("fingerprint") not in (None, p.fingerprint):
            raise TrainConfigError(f"{run} holds a run of other settings (fingerprint {r.get('fingerprint')} != "
                                   f"{p.fingerprint}); choose another label or pass overwrite=true")
    got = ckpt.latest(run / ckpt.CKPT_DIR)
    if got is None:
        return "fresh", None
    meta = ckpt.read_meta(got[1])
    if meta.get("fingerprint") != p.fingerprint:
        diffs = [k for k in sorted(set(meta.get("identity", {})) | set(p.identity()))
                 if meta.get("identity", {}).get(k) != p.identity().get(k)]
        raise TrainConfigError(f"the checkpoint {got[1]} was made with other settings ({', '.join(diffs)}); "
                               f"choose another label or pass overwrite=true")
    if meta.get("step") == p.steps and rec.is_file() and json.loads(rec.read_text()).get("status") == "complete":
        return "complete", got
    if p.resume == "never":
        raise TrainConfigError(f"{run} has a checkpoint (step {meta.get('step')}) and resume=never; "
                               f"pass resume=auto to go on or overwrite=true to start again")
    return "resume", got


# --------------------------------------------------------------------------------------- schedules
def lr_at(step: int, steps: int, warmup: int, lr: float, min_lr: float) -> float:
    """The authors' ``linear_decay_with_warmup`` for update ``step`` (1-based)."""
    if step < warmup:
        return min_lr + (lr - min_lr) * step / max(warmup, 1)
    return lr - (lr - min_lr) * (step - warmup) / max(steps - warmup, 1)


def warmup_steps(p: Plan) -> int:
    return int(round(p.optimizer["warmup_frac"] * p.steps))


# -------------------------------------------------------------------------------------------- data
def _step_seed(seed: int, step: int) -> int:
    h = hashlib.sha256(f"lm.train:{seed}:{step}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def global_starts(seed: int, step: int, n: int, tokens: int, seq_len: int) -> np.ndarray:
    """Start positions of the ``n`` windows of the global batch of ``step``: uniform on
    ``[0, tokens - seq_len - 1]``, a function of (seed, step) only."""
    g = torch.Generator().manual_seed(_step_seed(seed, step))
    return torch.randint(0, tokens - seq_len, (n,), generator=g).numpy()


def rank_starts(starts: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Process ``rank``'s contiguous share of the global batch."""
    k = len(starts) // world
    return starts[rank * k:(rank + 1) * k]


def windows(shards, starts, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([shards.read(int(s), seq_len + 1) for s in starts]).astype(np.int64)
    t = torch.from_numpy(rows)
    return t[:, :-1], t[:, 1:]


def eval_assignment(n: int, rank: int, world: int) -> tuple[list[int], list[float]]:
    """Validation windows of ``rank`` (contiguous share of ``0..n-1``) padded to the same count on
    every process; the weights are 0 for the padding."""
    per = -(-n // world)
    idx = list(range(rank * per, min(n, (rank + 1) * per)))
    w = [1.0] * len(idx)
    while len(idx) < per:
        idx.append(0)
        w.append(0.0)
    return idx, w


# -------------------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str


def init_distributed(p: Plan) -> Dist:
    """The default process group: torchrun's environment, or a one-process group of its own."""
    import torch.distributed as dist

    backend = "nccl" if p.device == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=p.timeout_s)
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    local = int(os.environ.get("LOCAL_RANK", "0")) if launched else 0
    if p.device == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    kw = {"device_id": device} if p.device == "cuda" else {}
    if launched:
        dist.init_process_group(backend, timeout=timeout, **kw)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout, **kw)
    d = Dist(dist.get_rank(), dist.get_world_size(), local, device, backend)
    if d.world != p.world_size:
        raise RuntimeError(f"process group of {d.world} processes, planned for {p.world_size}")
    return d


def shard_model(model: torch.nn.Module, p: Plan, d: Dist) -> torch.nn.Module:
    """Activation checkpointing (optional) and FSDP2 ``fully_shard`` on each block, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if p.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

        for i, block in enumerate(model.blocks):
            model.blocks[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
    model.to(d.device)  # fully_shard would move them too; explicit, buffers (STU filters) included
    mesh = init_device_mesh(d.device.type, (d.world,))
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if p.precision == "bf16" else MixedPrecisionPolicy())
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=p.reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=p.reshard_after_forward)
    return model


def decay_plan(model: torch.nn.Module, p: Plan) -> dict[str, float]:
    """Weight decay of each parameter name (call on the unsharded model: hints live on the tensors)."""
    wd = p.optimizer["weight_decay"]
    out = {}
    for n, prm in model.named_parameters():
        d = wd
        if not p.optimizer["decay_1d"] and prm.dim() < 2:
            d = 0.0
        hint = getattr(prm, "_optim", None) if p.optimizer["model_hints"] else None
        if hint and hint.get("weight_decay") is not None:
            d = float(hint["weight_decay"])
        out[n] = d
    return out


def make_optimizer(model: torch.nn.Module, decay: dict[str, float], p: Plan) -> torch.optim.Optimizer:
    groups: dict[float, list] = {}
    for n, prm in model.named_parameters():
        if prm.requires_grad:
            groups.setdefault(decay.get(n, p.optimizer["weight_decay"]), []).append(prm)
    o = p.optimizer
    kw = {"fused": True} if o["fused"] else {}
    return torch.optim.AdamW([{"params": ps, "weight_decay": w} for w, ps in sorted(groups.items(), reverse=True)],
                             lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], **kw)


def clip_grad_norm(model, max_norm: float | None, d: Dist) -> float:
    """The global gradient norm (accumulated in float64 over the local shards, then summed over the
    processes), and the gradients scaled by ``max_norm / norm`` when that is below 1 (as
    ``torch.nn.utils.clip_grad_norm_``, whose float32 reductions on CPU differ between 1 and N
    processes by ~1e-4 relative for an embedding-sized gradient). Every parameter is an FSDP2
    DTensor sharded over all processes, so each element is counted once."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard

    grads = [q.grad for q in model.parameters() if q.grad is not None]
    sq = torch.zeros((), dtype=torch.float64, device=d.device)
    for g in grads:
        if isinstance(g, DTensor):
            if g.device_mesh.size() != d.world or any(not isinstance(pl, Shard) for pl in g.placements):
                raise RuntimeError(f"gradient of placements {g.placements} on {g.device_mesh}: not an FSDP2 shard")
            g = g.to_local()
        elif d.world > 1:
            raise RuntimeError("a gradient that is not a DTensor under FSDP2")
        sq += torch.linalg.vector_norm(g, 2, dtype=torch.float64).square()
    dist.all_reduce(sq)
    norm = float(sq.sqrt())
    if max_norm and math.isfinite(norm):
        coef = max_norm / (norm + 1e-6)
        if coef < 1.0:
            torch._foreach_mul_(grads, coef)
    return norm


# -------------------------------------------------------------------------------------------- steps
def _has_moe(model) -> bool:
    from models.blocks import MoE

    return any(isinstance(m, MoE) for m in model.modules())


def train_step(model, opt, train, p: Plan, d: Dist, step: int, moe: bool) -> tuple[float, float, bool]:
    """One optimizer update; returns (mean token loss over the global batch, grad norm, applied)."""
    import torch.distributed as dist

    starts = rank_starts(global_starts(p.seed, step, p.global_sequences, p.train_tokens, p.seq_len), d.rank, d.world)
    loss_sum = torch.zeros((), device=d.device, dtype=torch.float32)
    mb = p.micro_batch
    for k in range(p.accumulation):
        x, y = windows(train, starts[k * mb:(k + 1) * mb], p.seq_len)
        x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
        if not p.sync_each_micro_step:
            model.set_requires_gradient_sync(k == p.accumulation - 1)
        logits = model(x)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        total = ce
        if moe:
            total = total + model.aux_loss.to(ce.device, ce.dtype)
        (total / p.accumulation).backward()
        loss_sum += ce.detach()
    norm = clip_grad_norm(model, p.grad_clip, d)
    applied = math.isfinite(norm)
    if applied:
        opt.step()
    opt.zero_grad(set_to_none=True)
    dist.all_reduce(loss_sum)
    return float(loss_sum) / (p.accumulation * d.world), norm, applied


@torch.no_grad()
def evaluate(model, val, p: Plan, d: Dist) -> tuple[float, float]:
    """Mean token loss and perplexity over the first ``eval.sequences`` validation windows."""
    import torch.distributed as dist

    was = model.training
    model.eval()
    idx, w = eval_assignment(p.eval_sequences, d.rank, d.world)
    acc = torch.zeros(2, dtype=torch.float64, device=d.device)
    try:
        for lo in range(0, len(idx), p.eval_micro_batch):
            x, y = windows(val, [i * p.seq_len for i in idx[lo:lo + p.eval_micro_batch]], p.seq_len)
            x, y = x.to(d.device), y.to(d.device)
            logits = model(x)
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            wt = torch.tensor(w[lo:lo + p.eval_micro_batch], device=d.device, dtype=torch.float64)
            acc[0] += (nll.view(len(wt), -1).double().sum(1) * wt).sum()
            acc[1] += wt.sum() * p.seq_len
    finally:
        model.train(was)
    dist.all_reduce(acc)
    loss = float(acc[0] / acc[1])
    return loss, math.exp(min(loss, 700.0))


# ------------------------------------------------------------------------------------------- record
def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _model_summary(model, p: Plan) -> dict:
    from models import count_params

    n = count_params(model)
    emb = model.embed.weight.numel()
    tied = model.head.weight is model.embed.weight
    return {"name": p.model_name, "fields": p.model_fields, "params": n,
            "params_non_embedding": n - emb - (0 if tied else model.head.weight.numel()),
            "tied_embeddings": bool(tied), "vocab_size": p.vocab_size,
            "embedding_rows": int(model.embed.weight.shape[0]),
            "seq_len": p.seq_len, "mixers": list(getattr(model, "mixer_names", []))}


class Recorder:
    """Rank 0's run record, curve rows and segment timing."""

    def __init__(self, p: Plan, d: Dist, model_summary: dict, provenance: dict, meta: dict | None, decay: dict):
        from benchmarks.records import device_info, git_commit, package_versions

        self.p, self.d = p, d
        self.run = pathlib.Path(p.run_dir)
        self.rows: dict[int, dict] = {int(r["step"]): r for r in (meta or {}).get("curve", [])}
        self.segments: list[dict] = list((meta or {}).get("segments", []))
        self.evals: list[dict] = list((meta or {}).get("evals", []))
        self.created = (meta or {}).get("created", _now())
        self.commit = git_commit() if d.rank == 0 else "unknown"
        self.diff = None
        self.device = device_info(d.device) if d.rank == 0 else {}
        self.versions = package_versions() if d.rank == 0 else {}
        self.model_summary, self.provenance = model_summary, provenance
        self.no_decay = sorted(n for n, w in decay.items() if w == 0.0)
        start = int((meta or {}).get("step", 0))
        self.seg = {"start_step": start, "end_step": start, "world_size": d.world, "backend": d.backend,
                    "device": str(d.device), "precision": p.precision, "micro_batch": p.micro_batch,
                    "accumulation": p.accumulation, "activation_checkpointing": p.activation_checkpointing,
                    "host": self.device.get("host"), "started": _now(), "commit": self.commit,
                    "train_seconds": 0.0, "eval_seconds": 0.0, "checkpoint_seconds": 0.0, "tokens": 0}
        self.step_rates: list[float] = []
        self.t_start = time.perf_counter()

    def step(self, step: int, loss: float, norm: float, lr: float, dt: float, applied: bool) -> None:
        toks = self.p.global_batch_tokens
        self.seg["train_seconds"] += dt
        self.seg["tokens"] += toks
        self.seg["end_step"] = step
        self.step_rates.append(toks / dt if dt > 0 else float("nan"))
        if step % self.p.log_every == 0 or step == self.p.steps:
            row = self.rows.setdefault(step, {"step": step})
            row.update(tokens=step * toks, loss=round(loss, 6), lr=float(f"{lr:.8g}"), grad_norm=round(norm, 6),
                       step_s=round(dt, 4), tokens_per_s=round(toks / dt, 1) if dt > 0 else None,
                       applied=applied)

    def eval(self, step: int, loss: float, ppl: float) -> None:
        row = self.rows.setdefault(step, {"step": step})
        row.update(tokens=step * self.p.global_batch_tokens, val_loss=round(loss, 6), val_ppl=round(ppl, 4))
        self.evals = [e for e in self.evals if e["step"] != step] + [{"step": step, "val_loss": loss, "val_ppl": ppl}]

    def curve(self) -> list[dict]:
        cols = ["step", "tokens", "loss", "lr", "grad_norm", "step_s", "tokens_per_s", "applied", "val_loss", "val_ppl"]
        return [{k: self.rows[s].get(k) for k in cols} for s in sorted(self.rows)]

    def segment(self) -> dict:
        s = dict(self.seg)
        s["wall_seconds"] = round(time.perf_counter() - self.t_start, 3)
        rates = self.step_rates[1:] or self.step_rates  # the first step of a segment warms up
        s["tokens_per_s"] = round(s["tokens"] / s["train_seconds"], 1) if s["train_seconds"] > 0 else None
        s["tokens_per_s_median"] = round(statistics.median(rates), 1) if rates else None
        for k in ("train_seconds", "eval_seconds", "checkpoint_seconds"):
            s[k] = round(s[k], 3)
        return s

    def meta(self, step: int) -> dict:
        return {"step": step, "fingerprint": self.p.fingerprint, "identity": self.p.identity(), "saved": _now(),
                "world_size": self.d.world, "created": self.created, "curve": self.curve(), "evals": self.evals,
                "segments": self.segments + [self.segment()], "model": self.p.model_name,
                "model_fields": self.p.model_fields, "vocab_size": self.p.vocab_size, "seq_len": self.p.seq_len,
                "data_root": self.p.data_root, "remapped": self.p.remapped, "run_dir": self.p.run_dir}

    def write(self, step: int, status: str) -> None:
        from benchmarks.records import atomic_write_csv, atomic_write_json, save_diff

        if self.d.rank != 0:
            return
        segs = self.segments + [self.segment()]
        tokens = sum(s["tokens"] for s in segs)
        secs = sum(s["train_seconds"] for s in segs)
        last_eval = max(self.evals, key=lambda e: e["step"]) if self.evals else None
        last = self.rows.get(step, {})
        if self.diff is None and self.commit.endswith("-dirty"):
            self.diff = save_diff(self.run, self.commit) or ""
        rec = {
            "format": FORMAT, "status": status, "step": step, "steps": self.p.steps,
            "fingerprint": self.p.fingerprint, "identity": self.p.identity(),
            "model": self.model_summary, "seed": self.p.seed, "world_size": self.d.world,
            "batch": {"seq_len": self.p.seq_len, "global_batch_tokens": self.p.global_batch_tokens,
                      "global_sequences": self.p.global_sequences, "micro_batch": self.p.micro_batch,
                      "accumulation": self.p.accumulation, "world_size": self.d.world},
            "optimizer": dict(self.p.optimizer, warmup_steps=warmup_steps(self.p), grad_clip=self.p.grad_clip,
                              no_decay_params=self.no_decay),
            "device": dict(self.device, backend=self.d.backend, precision=self.p.precision,
                           activation_checkpointing=self.p.activation_checkpointing),
            "versions": self.versions, "git_commit": self.commit, "git_diff": self.diff or None,
            "data": self.provenance,
            "tokens_trained": tokens, "train_seconds": round(secs, 3),
            "tokens_per_s": round(tokens / secs, 1) if secs > 0 else None,
            "tokens_per_s_median_last_segment": segs[-1]["tokens_per_s_median"],
            "wall_seconds": round(sum(s["wall_seconds"] for s in segs), 3),
            "final": {"step": step, "train_loss": last.get("loss"),
                      "val_step": last_eval["step"] if last_eval else None,
                      "val_loss": last_eval["val_loss"] if last_eval else None,
                      "val_ppl": last_eval["val_ppl"] if last_eval else None},
            "segments": segs, "created": self.created, "updated": _now(),
            "config": self.p.config, "command": "python -m lm.train " + " ".join(sys.argv[1:]),
        }
        atomic_write_json(self.run / RECORD, rec)
        atomic_write_csv(self.run / CURVE, self.curve())


# ---------------------------------------------------------------------------------------------- run
_STOP = {"signal": None}


def _on_signal(signum, frame):  # noqa: ARG001
    _STOP["signal"] = signum


def train(cfg, model_name: str | None = None, log=print) -> int:
    """Run (or resume) the training ``cfg`` asks for; 0, or 1 after ``error: ...`` for a bad config."""
    rank_env = int(os.environ.get("RANK", "0"))
    try:
        p = plan(cfg, model_name)
        train_data, val_data = prepare(p)
        state, found = run_state(p)
    except TrainConfigError as e:
        if rank_env == 0:
            print(f"error: {e}", file=sys.stderr)
        return 1
    if state == "complete":
        if rank_env == 0:
            log(f"{p.run_dir}: complete ({p.steps} steps); nothing to do (overwrite=true trains again)")
        return 0
    if p.threads:
        torch.set_num_threads(p.threads)

    import models

    torch.manual_seed(p.seed)
    try:
        model = models.build_model(p.model_name, vocab_size=p.vocab_size, seq_len=p.seq_len,
                                   **{k: v for k, v in p.model_fields.items() if k != "_target_"})
    except (ValueError, TypeError) as e:
        if rank_env == 0:
            print(f"error: model {p.model_name!r}: {e}", file=sys.stderr)
        return 1
    summary = _model_summary(model, p)
    moe = _has_moe(model)
    d = init_distributed(p)
    import torch.distributed as dist

    try:
        return _train(p, d, model, summary, moe, train_data, val_data, state, found, log)
    finally:
        dist.destroy_process_group()


def _train(p: Plan, d: Dist, model, summary, moe, train_data, val_data, state, found, log) -> int:
    import torch.distributed as dist

    run = pathlib.Path(p.run_dir)
    ck_root = run / ckpt.CKPT_DIR
    if d.rank == 0:
        if p.overwrite and run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True, exist_ok=True)
        ckpt.clean_partial(ck_root)
    dist.barrier()

    decay = decay_plan(model, p)
    if p.activation_checkpointing:  # wrapper names: blocks.i._checkpoint_wrapped_module.<...>
        decay = {_wrapped_name(n): w for n, w in decay.items()}
    model = shard_model(model, p, d)
    opt = make_optimizer(model, decay, p)
    meta = None
    start = 0
    if state == "resume":
        _, path = found
        meta = ckpt.read_meta(path)
        ckpt.load(path, model, opt)
        start = int(meta["step"])
    provenance = {"train": train_data.provenance(), "val": val_data.provenance()}
    rec = Recorder(p, d, summary, provenance, meta, decay)
    is0 = d.rank == 0
    say = (lambda m: log(m)) if is0 else (lambda m: None)
    say(f"{p.model_name}: {summary['params']:,} parameters, {d.world} process(es) on {d.device} ({d.backend}, "
        f"{p.precision}), global batch {p.global_sequences} x {p.seq_len} tokens = micro batch {p.micro_batch} "
        f"x accumulation {p.accumulation} x {d.world} processes; {p.steps} steps -> {run}"
        + (f"; resuming after step {start} (saved by {meta['world_size']} process(es))" if meta else ""))

    old_handlers = {}
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        try:
            old_handlers[sig] = signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread
            pass
    bar = None
    if is0 and p.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=p.steps, initial=start, desc=p.model_name, unit="step", dynamic_ncols=True,
                   mininterval=1.0)
        say = bar.write

    def do_eval(step: int) -> None:
        t = time.perf_counter()
        loss, ppl = evaluate(model, val_data, p, d)
        rec.seg["eval_seconds"] += time.perf_counter() - t
        rec.eval(step, loss, ppl)
        say(f"step {step}: validation loss {loss:.4f}, perplexity {ppl:.2f}")

    def do_save(step: int, status: str) -> None:
        t = time.perf_counter()
        rec.write(step, status)  # the record first: a checkpoint's run folder always has one
        ckpt.save(ck_root, step, model, opt, rec.meta(step), rank=d.rank,
                  keep=None if step == p.steps else p.keep)
        rec.seg["checkpoint_seconds"] += time.perf_counter() - t
        rec.write(step, status)

    warm = warmup_steps(p)
    status = "running"
    step = start
    try:
        if start >= p.steps:  # the final checkpoint is there, its record was not finished
            status = "complete"
            rec.write(start, status)
        elif p.stop_after is not None and start >= p.stop_after:
            status = "stopped"
            say(f"already at step {start} (stop_after={p.stop_after}); nothing to do")
        else:
            if start == 0 and p.eval_at_start:
                do_eval(0)
            model.train()
            for step in range(start + 1, p.steps + 1):
                t0 = time.perf_counter()
                lr = lr_at(step, p.steps, warm, p.optimizer["lr"], p.optimizer["min_lr"])
                for g in opt.param_groups:
                    g["lr"] = lr
                loss, norm, applied = train_step(model, opt, train_data, p, d, step, moe)
                if d.device.type == "cuda":
                    torch.cuda.synchronize(d.device)
                dt = time.perf_counter() - t0
                rec.step(step, loss, norm, lr, dt, applied)
                if not applied:
                    say(f"step {step}: non-finite gradient norm; update skipped")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                                    tok_s=f"{p.global_batch_tokens / dt:,.0f}", refresh=False)
                last = step == p.steps
                if last or (p.eval_every and step % p.eval_every == 0):
                    do_eval(step)
                    if not last:
                        rec.write(step, "running")
                flag = torch.tensor([1.0 if _STOP["signal"] is not None else 0.0], device=d.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                if last:
                    status = "complete"
                    do_save(step, status)
                elif flag.item() or (p.stop_after is not None and step >= p.stop_after):
                    status = "stopped"
                    do_save(step, status)
                    say(f"stopped after step {step} with a checkpoint "
                        f"({'signal' if flag.item() else 'stop_after'}); rerun the command to go on")
                    break
                elif p.checkpoint_every and step % p.checkpoint_every == 0:
                    do_save(step, "running")
    finally:
        if bar is not None:
            bar.close()
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    if is0:
        r = rec.segment()
        final = rec.evals[-1] if rec.evals else {}
        log(f"{status} at step {step}: {r['tokens']:,} tokens in {r['train_seconds']:.1f} s of training "
            f"({r['tokens_per_s'] or 0:,.0f} tokens/s; {r['wall_seconds']:.1f} s wall)"
            + (f"; validation loss {final['val_loss']:.4f} (perplexity {final['val_ppl']:.2f}) at step {final['step']}"
               if final else "") + f" -> {run}")
    return 0


def _wrapped_name(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blocks":
        return ".".join(parts[:2] + ["_checkpoint_wrapped_module"] + parts[2:])
    return name


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    from tasks.base import register_resolvers  # ${repo:} of conf/paths

    register_resolvers()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="lm_train")
    def _app(cfg: DictConfig) -> None:
        code = train(cfg)
        if code:
            sys.exit(code)

    _app()


if __name__ == "__main__":
    main()
