"""Section IV of the paper end to end: ``make reproduce-lm PROFILE=smoke|paper``
(= ``python -m lm.reproduce profile=...``, a Hydra config ``conf/lm_reproduce.yaml``).

    python -m lm.reproduce                                  # smoke: 4 tiny models, 2 CPU processes each
    python -m lm.reproduce profile=paper                    # the paper: 4 x ~550M models on one 8-GPU node
    python -m lm.reproduce profile=paper dry_run=true       # print the commands and each run's state only
    python -m lm.reproduce models=[lm_flash_stu_tiny,lm_transformer_tiny] train.steps=50 nproc=1
    python -m lm.reproduce 'stages=[report]'                # rewrite the report from the runs' records
    python -m lm.reproduce profile=paper 'models=[lm_flash_stu_2b,lm_transformer_2b]'   # Table V's pair

Arguments are Hydra overrides of ``conf/lm_reproduce.yaml``, except ``train.<key>=<value>`` (passed to
every run's ``lm.train`` as ``<key>=<value>``, after the profile's ``train`` list) and
``data.<key>=<value>`` (passed to ``lm.data``). The stages, in order:

1. **check** (always, before any work or file): the stages, the models (names of ``conf/model``;
   the valid ones are listed on error), ``nproc``/``threads``/``device`` (``device=cuda`` needs as
   many GPUs as ``nproc``), the sample settings; the ``lm.data`` config; and every run's
   ``lm.train`` config through :func:`lm.train.plan` (the profile's sizes, the ``train``
   overrides, ``nproc`` processes): a bad setting stops with ``error: ...`` (exit 1)
   naming the key and the valid choices. Where the data are already made, each run's folder is
   opened too (a folder of other settings is refused here, not after the earlier runs trained).
2. **data**: :func:`lm.data.make` with the profile (smoke: Shakespeare, o200k_base, ids remapped to
   the 22,275 the training shards use + EOT + ``<unk>``, see :mod:`lm.remap`; paper: FineWeb-Edu
   sample-10BT, full vocabulary). A finished folder is only verified; an interrupted one finished.
3. **train**: each model in turn, ``torchrun --standalone --nproc_per_node=<nproc> -m lm.train
   model=<m> profile=<p> ...`` as a subprocess (``OMP_NUM_THREADS=threads``). A complete run is
   skipped without starting torchrun; a run with a checkpoint resumes from it (``lm.train``
   resumes on any number of processes). Its output is passed through with a prefix
   ``[lm mm:ss] (i/n) <model> |`` and, every ``progress_every`` seconds, a progress line (step,
   loss, time left for the run, runs done of all). Ctrl-C / SIGTERM is passed on to torchrun as
   SIGTERM: ``lm.train`` saves a checkpoint at the end of the current step and the same command
   resumes there. A run that fails stops the reproduction (exit 1).
4. **sample**: for each complete run, one continuation of ``sample.prompt`` (``lm.sample``:
   temperature 1, top-k 50, as the paper's appendix) saved as ``<run>/sample.json``; kept when
   its settings and checkpoint step are unchanged.
5. **report**: :func:`lm.report.report` on exactly these runs: ``<results>/lm/<profile>/``
   (``table.md``, ``table.tex``, ``records.jsonl``, ``curves.csv``, ``samples.md``) and
   ``<plots>/lm/<profile>/`` (Figures 10/11-style).

Each invocation is recorded in ``<results>/lm/<profile>/reproduce.json`` (command, stages and their
seconds, each run's state before and seconds, machine, load average before/after, commit, wall
time): the wall time of ``make reproduce-lm``.

**Smoke budget** (issue 13: the whole ``make reproduce-lm PROFILE=smoke`` in 30 minutes on an idle
2-core CPU). The sizes are ``conf/lm_train.yaml``'s smoke column (256-token windows, 4,096 tokens a
step, 200 steps = 819,200 tokens a model; width 64, 4 layers, 1.5-2.1M parameters), with 128
validation windows an evaluation and a learning rate ten times the paper's (``conf/lm_reproduce.yaml``).
Before choosing: 10 steps after a 2-step start on the shared 2-core machine (load average ~5),
2 processes x 1 thread, took 1.86 / 2.8 / 1.8 / 1.9 s a step (Flash STU / Transformer / Mamba-2 /
Mamba-2 hybrid) and 1.96 / 2.66 / 1.85 / 1.89 s of CPU time (both processes, user + system), i.e.
~1.0-1.35 s a step where each process has a core of its own: ~14 min of steps for the four models,
~17 min with start-up, evaluations, samples and report. The real run
(``results/lm/smoke/reproduce.json``, shared machine, load average 3.6-5.8 at the start, ~4 at the
end): 1,462 s = 24 min 22 s in all -- training 1,385 s (5.4-6.2 min a model, 1.36-1.57 s a step),
samples 75 s, data check and report ~2 s. 300 steps would be ~36 min at that pace: 200 keeps the
target with a margin on a loaded machine too.

**Paper profile** (it cannot run on this machine): ``nproc=8`` processes on one node of 8 GPUs
(the paper: 8 x H100 80GB, ~16 hours a model), the four ~550M models of Tables IV/XII
(``lm_flash_stu`` 551.5M, ``lm_mamba2_hybrid`` 546.6M, ``lm_mamba2`` 561.3M, ``lm_transformer``
564.6M), 8,192-token sequences, 524,288 tokens a step, 19,073 steps (10B tokens), bf16, activation
checkpointing; the data need the network once (FineWeb-Edu). On a Slurm cluster, either run this
command inside a one-node allocation (``srun --gpus-per-node=8 --time=3-00:00:00 python -m
lm.reproduce profile=paper``: the runs resume across allocations), or submit each run with
``scripts/slurm_lm.sh`` (``dry_run=true`` prints those ``sbatch`` lines) and, when they are done,
``python -m lm.reproduce profile=paper 'stages=[sample,report]'``.
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from lm import REPO

STAGES = ("data", "train", "sample", "report")
CONF_DIR = REPO / "conf"
FORMAT = "flash-stu-bench/lm-reproduce"
SAMPLE_FILE = "sample.json"
# lm.train's tqdm line (rank 0): "<model>:  40%|####  | 80/200 [02:10<03:15,  1.63s/step, loss=6.1234, ...]"
_TQDM = re.compile(r"(\d+)/(\d+) \[([0-9:]+)<([0-9:?]+)[^\]]*\]")
_LOSS = re.compile(r"loss=([0-9.eE+-]+)")


class ReproduceError(ValueError):
    """A setting that cannot run, or a stage that failed; the message says what and what is valid."""


@dataclass
class Job:
    """One model's training run."""
    index: int
    model: str
    overrides: list[str]
    plan: Any                      # lm.train.Plan
    command: list[str]
    state: str = "unknown"         # fresh | resume | complete | no data yet
    step: int | None = None        # the latest checkpoint's step (resume / complete)
    run_dir: str = ""


@dataclass
class Plan:
    """The checked settings of one invocation."""
    profile: str
    models: list[str]
    nproc: int
    threads: int | None
    device: str
    stages: list[str]
    dry_run: bool
    progress_every: float
    sample: dict
    data_cfg: Any
    data_dir: str
    paths: dict
    jobs: list[Job] = field(default_factory=list)
    torchrun: list[str] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)
    data_overrides: list[str] = field(default_factory=list)
    command: str = ""


# --------------------------------------------------------------------------------------- compose
def compose(config_name: str, overrides: list[str]):
    """``conf/<config_name>.yaml`` with Hydra ``overrides`` (outside a Hydra app)."""
    from hydra import compose as hcompose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tasks.base import register_resolvers

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return hcompose(config_name, overrides=list(overrides), return_hydra_config=False)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hcompose(config_name, overrides=list(overrides), return_hydra_config=False)


def _compose_checked(config_name: str, overrides: list[str], what: str):
    try:
        return compose(config_name, overrides)
    except Exception as e:  # noqa: BLE001 -- Hydra's override / composition errors: say which
        msg = str(e).strip().splitlines()
        raise ReproduceError(f"{what}: {' '.join(m.strip() for m in msg if m.strip())}") from None


def _plain(cfg) -> Any:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return OmegaConf.create(plain)


def _str_list(key: str, v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, (str, int, float, bool)) for x in v):
        raise ReproduceError(f"{key} must be a list of strings, got {v!r}")
    return [str(x) for x in v]


def _int(key: str, v, minimum: int, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ReproduceError(f"{key} must be an integer >= {minimum}{' or null' if allow_none else ''}, got {v!r}")
    return v


def _num(key: str, v, minimum: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < minimum:
        raise ReproduceError(f"{key} must be a number >= {minimum}, got {v!r}")
    return float(v)


# ------------------------------------------------------------------------------------------ check
def split_argv(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """``(lm.reproduce overrides, lm.train overrides, lm.data overrides)``: ``train.<key>=<value>``
    is lm.train's ``<key>=<value>``, ``data.<key>=<value>`` lm.data's (``+``/``~`` kept)."""
    own, train, data = [], [], []
    for a in argv:
        key = a.split("=", 1)[0]
        bare = key.lstrip("+~")
        sign = key[: len(key) - len(bare)]
        for prefix, out in (("train.", train), ("data.", data)):
            if bare.startswith(prefix):
                out.append(sign + a[len(sign) + len(prefix):])
                break
        else:
            own.append(a)
    return own, train, data


def check(cfg, argv: list[str] | None = None, extra_train: list[str] | None = None,
          extra_data: list[str] | None = None) -> Plan:
    """Check everything ``cfg`` asks for, with the command line's ``train.*`` / ``data.*`` overrides
    (nothing written, no data read but the shards' manifests)."""
    import torch
    from omegaconf import OmegaConf

    import models as registry
    from lm import train as T
    from lm.shards import ShardError, ShardSettings

    try:
        c = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001
        raise ReproduceError(f"the config does not resolve: {e}") from None
    profile = str(c["profile"]["name"])
    known = {"defaults", "profile", "paths", "sizes", "models", "nproc", "threads", "device", "train", "data",
             "stages", "dry_run", "progress_every", "torchrun", "sample"}
    if set(c) - known:
        raise ReproduceError(f"unknown key(s) {sorted(set(c) - known)}; known: {sorted(known - {'defaults'})}")

    stages = _str_list("stages", c.get("stages"))
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages or len(set(stages)) != len(stages):
        raise ReproduceError(f"stages must be distinct names among {', '.join(STAGES)} (run in that order); "
                             f"got {stages}")
    stages = [s for s in STAGES if s in stages]

    names = _str_list("models", c.get("models"))
    valid = registry.available_models(include_large=True)
    if not names:
        raise ReproduceError(f"models is empty; the {profile} profile's: {c['sizes'][profile]['models']}")
    unknown = [m for m in names if m not in valid]
    if unknown:
        raise ReproduceError(f"unknown model(s) {unknown}; valid models (conf/model): {', '.join(valid)}; "
                             f"the {profile} profile trains {', '.join(c['sizes'][profile]['models'])}")
    if len(set(names)) != len(names):
        raise ReproduceError(f"models lists a model twice: {names}")

    nproc = _int("nproc", c.get("nproc"), 1)
    threads = _int("threads", c.get("threads"), 1, allow_none=True)
    device = str(c.get("device"))
    if device not in ("cpu", "cuda", "auto"):
        raise ReproduceError(f"device must be one of cpu, cuda, auto; got {device!r}")
    dry = c.get("dry_run")
    if dry not in (True, False):
        raise ReproduceError(f"dry_run must be true or false, got {dry!r}")
    torchrun = _str_list("torchrun", c.get("torchrun"))
    multinode = any(a.startswith(("--nnodes", "--rdzv", "--master", "--node")) for a in torchrun)
    cuda_n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if "train" in stages and not dry:
        if device == "cuda" and cuda_n == 0:
            raise ReproduceError(f"device=cuda (the {profile} profile trains on {nproc} GPUs) but CUDA is not available "
                                 f"here; run it on a GPU node (see lm/reproduce.py, 'Paper profile'), or print the "
                                 f"plan with dry_run=true, or train on the CPU with device=cpu")
        if device in ("cuda", "auto") and cuda_n and nproc > cuda_n and not multinode:
            raise ReproduceError(f"nproc={nproc} processes but this node has {cuda_n} GPU(s); pass nproc={cuda_n} "
                                 f"(lm.train keeps the global batch for any process count)")
    progress_every = _num("progress_every", c.get("progress_every"), 0)

    s = c.get("sample") or {}
    known_s = {"prompt", "tokens", "top_k", "temperature", "seed", "device"}
    if set(s) - known_s:
        raise ReproduceError(f"unknown sample key(s) {sorted(set(s) - known_s)}; known: {sorted(known_s)}")
    if not isinstance(s.get("prompt"), str):
        raise ReproduceError(f"sample.prompt must be a string, got {s.get('prompt')!r}")
    sample = {"prompt": s["prompt"], "tokens": _int("sample.tokens", s.get("tokens"), 0),
              "top_k": _int("sample.top_k", s.get("top_k"), 0), "temperature": _num("sample.temperature",
                                                                                    s.get("temperature"), 0),
              "seed": _int("sample.seed", s.get("seed"), 0), "device": str(s.get("device"))}
    if sample["device"] not in ("auto", "cpu", "cuda"):
        raise ReproduceError(f"sample.device must be one of auto, cpu, cuda; got {sample['device']!r}")

    paths = {k: str(v) for k, v in c["paths"].items()}
    base = [f"profile={profile}", f"paths.runs={paths['runs']}", f"paths.data={paths['data']}"]

    # the data: lm.data's config (its settings checked as lm.data checks them)
    data_over = _str_list("data", c.get("data")) + list(extra_data or [])
    data_cfg = _compose_checked("lm_data", base + data_over, "data (lm.data overrides)")
    try:
        sh = OmegaConf.to_container(data_cfg.shards, resolve=True)
        unknown = sorted(set(sh) - set(ShardSettings.__dataclass_fields__))
        if unknown:
            raise ShardError(f"unknown shards setting(s) {unknown}; known: {sorted(ShardSettings.__dataclass_fields__)}")
        ShardSettings(**sh).check()
    except ShardError as e:
        raise ReproduceError(f"data: {e}") from None
    data_dir = str(data_cfg.out_dir)

    # every run: lm.train's own checks, for nproc processes
    train_over = _str_list("train", c.get("train")) + list(extra_train or [])
    for o in train_over:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in ("model", "profile") or key.startswith("paths"):
            raise ReproduceError(f"train override {o!r}: set {key} through lm.reproduce's own {key}"
                                 f"{'s' if key == 'model' else ''}=..., not as an lm.train override")
    fixed = [f"distributed.device={device}", "progress=true"] + ([f"threads={threads}"] if threads else [])
    jobs = []
    for i, m in enumerate(names, 1):
        over = base + [f"model={m}"] + fixed + train_over
        # a dry run of a CUDA plan on a machine without CUDA: checked as device=auto, printed as asked
        checked = ([o if o != f"distributed.device={device}" else "distributed.device=auto" for o in over]
                   if dry and device == "cuda" and cuda_n == 0 else over)
        tcfg = _compose_checked("lm_train", checked, f"lm.train config of {m}")
        try:
            p = T.plan(_plain(tcfg), model_name=m, world_size=nproc)
        except T.TrainConfigError as e:
            raise ReproduceError(f"{m}: {e}") from None
        if "data" in stages and pathlib.Path(p.data_root).resolve() != pathlib.Path(data_dir).resolve():
            raise ReproduceError(f"{m}: lm.train reads {p.data_root} but the data stage writes {data_dir}; pass the "
                                 f"same folder to both (data.out_dir=... and train.data.root=...), or leave the data "
                                 f"stage out")
        cmd = torchrun_command(nproc, torchrun, over)
        jobs.append(Job(i, m, over, p, cmd))
    plan = Plan(profile=profile, models=names, nproc=nproc, threads=threads, device=device, stages=stages,
                dry_run=bool(dry), progress_every=progress_every, sample=sample, data_cfg=data_cfg,
                data_dir=data_dir, paths=paths, jobs=jobs, torchrun=torchrun, train_overrides=train_over,
                data_overrides=data_over,
                command="python -m lm.reproduce " + " ".join(shlex.quote(a) for a in (argv or [])))
    locate_runs(plan, strict=True)
    return plan


def torchrun_command(nproc: int, extra: list[str], overrides: list[str]) -> list[str]:
    standalone = [] if any(a.startswith(("--nnodes", "--rdzv", "--master")) for a in extra) else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *standalone, f"--nproc_per_node={nproc}", *extra,
            "-m", "lm.train", *overrides]


def shown(cmd: list[str]) -> str:
    """A command as a person would type it (``torchrun`` for ``python -m torch.distributed.run``)."""
    if cmd[1:3] == ["-m", "torch.distributed.run"]:
        cmd = ["torchrun"] + cmd[3:]
    return " ".join(shlex.quote(a) for a in cmd)


def locate_runs(plan: Plan, strict: bool) -> bool:
    """Each run's folder and state, where the data are made (``lm.train.prepare`` / ``run_state``).
    Returns whether the data were there. ``strict``: a folder of other settings is an error."""
    from lm import train as T
    from lm.shards import ShardError, read_manifest

    try:
        m = read_manifest(plan.jobs[0].plan.data_root) if plan.jobs else None
    except ShardError as e:
        raise ReproduceError(f"data: {e}") from None
    if m is None or not m.get("complete"):
        for j in plan.jobs:
            j.state, j.run_dir = "no data yet", ""
        return False
    for j in plan.jobs:
        try:
            T.prepare(j.plan)
            state, found = T.run_state(j.plan)
        except T.TrainConfigError as e:
            if strict:
                raise ReproduceError(f"{j.model}: {e}") from None
            state, found = f"error: {e}", None
        j.state, j.run_dir = state, j.plan.run_dir
        j.step = found[0] if found else None
    return True


# -------------------------------------------------------------------------------------- messages
class Clock:
    def __init__(self):
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def stamp(self) -> str:
        return _mmss(self.elapsed())


def _mmss(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _say(clock: Clock, msg: str) -> None:
    print(f"[lm {clock.stamp()}] {msg}", flush=True)


def print_plan(plan: Plan) -> None:
    from omegaconf import OmegaConf

    n = len(plan.jobs)
    print(f"lm.reproduce plan, profile={plan.profile}: stages {', '.join(plan.stages)}; {n} run(s) of {plan.nproc} "
          f"process(es) each (device {plan.device}, {plan.threads or 'default'} thread(s) a process)")
    if "data" in plan.stages:
        d = OmegaConf.to_container(plan.data_cfg, resolve=True)
        print(f"  data: python -m lm.data profile={plan.profile} {' '.join(plan.data_overrides)}".rstrip()
              + f"\n        corpus {d['corpus']['name']}, tokenizer {d['tokenizer']['name']}, remap {d['remap']}"
                f" -> {plan.data_dir}")
    for j in plan.jobs:
        p = j.plan
        print(f"  ({j.index}/{n}) {j.model}: {p.steps:,} steps x {p.global_batch_tokens:,} tokens = "
              f"{p.steps * p.global_batch_tokens:,} tokens, seq_len {p.seq_len}, micro batch {p.micro_batch} x "
              f"accumulation {p.accumulation} x {plan.nproc} processes; state: {j.state}"
              + (f" (checkpoint at step {j.step})" if j.step is not None and j.state != "complete" else "")
              + (f"\n        run folder {j.run_dir}" if j.run_dir else ""))
        print(f"        {shown(j.command)}")
    if "sample" in plan.stages:
        s = plan.sample
        print(f"  sample: lm.sample, {s['tokens']} tokens, temperature {s['temperature']}, top-k {s['top_k']}, "
              f"seed {s['seed']}, prompt {s['prompt'][:60]!r}{'...' if len(s['prompt']) > 60 else ''}")
    if "report" in plan.stages:
        print(f"  report: {plan.paths['results']}/lm/{plan.profile}/ (table.md, table.tex, records.jsonl, curves.csv, "
              f"samples.md, reproduce.json), {plan.paths['plots']}/lm/{plan.profile}/")
    if plan.device != "cpu":
        print("  on a Slurm cluster, one job per run instead (then: python -m lm.reproduce "
              f"profile={plan.profile} 'stages=[sample,report]'):")
        prev = None
        for j in plan.jobs:
            args = " ".join(shlex.quote(o) for o in j.overrides if not o.startswith("paths."))
            dep = "" if prev is None else f"--dependency=afterok:${prev} "
            print(f"    j{j.index}=$(sbatch --parsable {dep}scripts/slurm_lm.sh {args})")
            prev = f"j{j.index}"


# ------------------------------------------------------------------------------------------ stages
def stage_data(plan: Plan, clock: Clock) -> None:
    from lm.data import make

    _say(clock, f"data: lm.data profile={plan.profile} -> {plan.data_dir}")
    rc = make(plan.data_cfg, log=lambda m: _say(clock, f"data | {m}"),
              command=f"python -m lm.data profile={plan.profile} " + " ".join(plan.data_overrides))
    if rc:
        raise ReproduceError(f"the data stage failed (the error is above); fix it and rerun {plan.command}")


_STOP: dict[str, Any] = {"signal": None, "proc": None}


def _forward_signal(signum, frame):  # noqa: ARG001
    """SIGINT/SIGTERM: passed on to a running torchrun as SIGTERM (its processes save a checkpoint
    at the end of the step and exit; :func:`stage_train` then stops); otherwise stop here."""
    _STOP["signal"] = signum
    p = _STOP["proc"]
    if p is not None and p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)  # torchrun passes it to its processes: checkpoint, then exit
        except OSError:
            pass
        return
    raise KeyboardInterrupt


def _child_env(plan: Plan) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = str(plan.threads or 1)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HYDRA_FULL_ERROR", "1")
    return env


def run_job(plan: Plan, job: Job, clock: Clock, done_before: float) -> int:
    """Run one torchrun; pass its lines through with a prefix and print a progress line every
    ``progress_every`` seconds. Returns its exit code."""
    n = len(plan.jobs)
    tag = f"({job.index}/{n}) {job.model}"
    proc = subprocess.Popen(job.command, cwd=REPO, env=_child_env(plan), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    _STOP["proc"] = proc
    fd = proc.stdout.fileno()
    buf = b""
    last_progress = time.monotonic()
    latest: tuple | None = None
    killed_at = None
    try:
        while True:
            r, _, _ = select.select([fd], [], [], 1.0)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                parts = re.split(rb"(\r|\n)", buf)
                buf = parts.pop()  # the unfinished piece
                for piece in parts[::2]:
                    text = piece.decode("utf-8", "replace").strip()
                    if not text:
                        continue
                    m = _TQDM.search(text)
                    if m and "|" in text:
                        loss = _LOSS.search(text)
                        latest = (*m.groups(), loss.group(1) if loss else None)
                        continue
                    print(f"[lm {clock.stamp()}] {tag} | {text}", flush=True)
            now = time.monotonic()
            if (plan.progress_every and latest and now - last_progress >= plan.progress_every
                    and latest[0] != latest[1]):
                step, total, _el, left, loss = latest
                frac = (done_before + int(step) / max(int(total), 1)) / n
                _say(clock, f"{tag} | step {step}/{total}" + (f", loss {float(loss):.3f}" if loss else "")
                     + (f", ~{left} left for this run" if "?" not in left else "")
                     + f" | all runs: {100 * frac:.0f}%")
                last_progress = now
            if _STOP["signal"] is not None and killed_at is None:
                killed_at = now
            if killed_at is not None and now - killed_at > 180 and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        if buf.strip():
            print(f"[lm {clock.stamp()}] {tag} | {buf.decode('utf-8', 'replace').strip()}", flush=True)
        return proc.wait()
    finally:
        _STOP["proc"] = None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _record(run_dir: str) -> dict:
    path = pathlib.Path(run_dir) / "record.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def stage_train(plan: Plan, clock: Clock, inv: dict) -> list[Job]:
    """Train each run in turn; returns the complete ones."""
    from lm import train as T

    n = len(plan.jobs)
    done = 0.0
    spent: list[float] = []
    complete = []
    for job in plan.jobs:
        T.prepare(job.plan)
        state, found = T.run_state(job.plan)
        job.state, job.run_dir, job.step = state, job.plan.run_dir, (found[0] if found else None)
        entry = {"model": job.model, "run_dir": job.run_dir, "state_before": state, "step_before": job.step,
                 "command": shown(job.command)}
        inv["runs"].append(entry)
        tag = f"({job.index}/{n}) {job.model}"
        if state == "complete":
            rec = _record(job.run_dir)
            fin = rec.get("final") or {}
            _say(clock, f"{tag}: complete already (step {job.step}, validation loss {fin.get('val_loss', float('nan')):.4f})"
                        f"; skipped -> {job.run_dir}")
            entry["seconds"] = 0.0
            done += 1
            complete.append(job)
            continue
        _say(clock, f"{tag}: {'resuming from step ' + str(job.step) if state == 'resume' else 'training'} "
                    f"({job.plan.steps} steps) -> {job.run_dir}")
        t = time.perf_counter()
        rc = run_job(plan, job, clock, done)
        entry["seconds"] = round(time.perf_counter() - t, 1)
        entry["exit_code"] = rc
        rec = _record(job.run_dir)
        entry["status"] = rec.get("status")
        if _STOP["signal"] is not None:
            raise KeyboardInterrupt
        if rc != 0:
            raise ReproduceError(f"training {job.model} failed (exit {rc}; its output is above); rerun "
                                 f"{plan.command} to resume it from its last checkpoint")
        fin = rec.get("final") or {}
        if rec.get("status") == "complete":
            done += 1
            spent.append(entry["seconds"])
            complete.append(job)
            left = n - done
            eta = f", ~{_mmss(left * sum(spent) / len(spent))} to go at this pace" if left and spent else ""
            _say(clock, f"{tag}: done in {_mmss(entry['seconds'])}: validation loss {fin.get('val_loss', float('nan')):.4f} "
                        f"(perplexity {fin.get('val_ppl', float('nan')):.1f}), {rec.get('tokens_per_s') or 0:,.0f} "
                        f"tokens/s | {int(done)}/{n} runs complete{eta}")
        else:
            done += (rec.get("step") or 0) / max(job.plan.steps, 1)
            _say(clock, f"{tag}: {rec.get('status', 'not complete')} at step {rec.get('step')} of {job.plan.steps}; "
                        f"rerun the command to go on")
    return complete


def sample_settings(plan: Plan) -> dict:
    s = dict(plan.sample)
    s.pop("device", None)
    return s


def stage_sample(plan: Plan, jobs: list[Job], clock: Clock) -> None:
    """``<run>/sample.json`` for each complete run (kept when the settings and the step are the same)."""
    import torch

    from benchmarks.records import atomic_write_json, git_commit
    from lm import sample as S

    s = sample_settings(plan)
    device = plan.sample["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, plan.nproc * (plan.threads or 1))))
    for job in jobs:
        rec = _record(job.run_dir)
        path = pathlib.Path(job.run_dir) / SAMPLE_FILE
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("settings") == s and old.get("step") == rec.get("step"):
                _say(clock, f"sample {job.model}: kept ({path})")
                continue
        t = time.perf_counter()
        text = S.sample(job.run_dir, s["prompt"], s["tokens"], s["temperature"], s["top_k"] or None, 1, s["seed"],
                        device)[0]
        secs = time.perf_counter() - t
        atomic_write_json(path, {"format": "flash-stu-bench/lm-sample", "model": job.model, "step": rec.get("step"),
                                 "settings": s, "text": text, "device": device, "seconds": round(secs, 2),
                                 "commit": git_commit(), "made": _now(),
                                 "command": f"python -m lm.sample {job.run_dir} --prompt {shlex.quote(s['prompt'])} "
                                            f"--tokens {s['tokens']} --temperature {s['temperature']} "
                                            f"--top-k {s['top_k']} --seed {s['seed']}"})
        _say(clock, f"sample {job.model} ({secs:.1f} s): ...{' '.join(text.split())[-80:]!r}")


def _machine() -> dict:
    import torch

    from benchmarks.records import device_info

    info = device_info("cuda" if torch.cuda.is_available() else "cpu")
    info.pop("torch_threads", None)
    return info


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def write_invocation(plan: Plan, inv: dict) -> pathlib.Path:
    """Add (or update) this invocation in ``<results>/lm/<profile>/reproduce.json``."""
    from benchmarks.records import atomic_write_json

    path = pathlib.Path(plan.paths["results"]) / "lm" / plan.profile / "reproduce.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        doc = {}
    if doc.get("format") != FORMAT:
        doc = {"format": FORMAT, "profile": plan.profile, "invocations": []}
    doc["invocations"] = [i for i in doc["invocations"] if i.get("id") != inv["id"]] + [inv]
    atomic_write_json(path, doc)
    return path


# --------------------------------------------------------------------------------------------- run
def reproduce(cfg, argv: list[str] | None = None, extra_train: list[str] | None = None,
              extra_data: list[str] | None = None) -> int:
    """Check, then run the stages; 0, or 1 after ``error: ...``."""
    from benchmarks.records import git_commit

    try:
        plan = check(cfg, argv, extra_train, extra_data)
    except ReproduceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if plan.dry_run:
        print_plan(plan)
        return 0
    clock = Clock()
    inv = {"id": _now() + f"-{os.getpid()}", "command": plan.command, "started": _now(), "stages": plan.stages,
           "models": plan.models, "nproc": plan.nproc, "threads": plan.threads, "device": plan.device,
           "train_overrides": plan.train_overrides, "data_overrides": plan.data_overrides,
           "machine": _machine(), "load_average_start": _load(), "git_commit": git_commit(),
           "stage_seconds": {}, "runs": [], "status": "running"}
    _say(clock, f"lm.reproduce profile={plan.profile}: {len(plan.jobs)} model(s) "
                f"({', '.join(plan.models)}), stages {', '.join(plan.stages)}, {plan.nproc} process(es) a run")
    cores = os.cpu_count() or 1
    if plan.device == "cpu" and plan.nproc * (plan.threads or 1) > cores:
        _say(clock, f"warning: {plan.nproc} process(es) x {plan.threads or 1} thread(s) on {cores} core(s): "
                    f"they will wait on each other (nproc={max(1, cores // (plan.threads or 1))} fits this machine)")
    old = {sig: signal.signal(sig, _forward_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    complete: list[Job] = []
    try:
        if "data" in plan.stages:
            t = time.perf_counter()
            stage_data(plan, clock)
            inv["stage_seconds"]["data"] = round(time.perf_counter() - t, 1)
        if not locate_runs(plan, strict=True):
            raise ReproduceError(f"no finished token shards at {plan.jobs[0].plan.data_root}; add the data stage "
                                 f"('stages=[data,...]') or run python -m lm.data profile={plan.profile}")
        if "train" in plan.stages:
            t = time.perf_counter()
            complete = stage_train(plan, clock, inv)
            inv["stage_seconds"]["train"] = round(time.perf_counter() - t, 1)
        else:
            complete = [j for j in plan.jobs if j.state == "complete"]
        if "sample" in plan.stages:
            t = time.perf_counter()
            stage_sample(plan, complete, clock)
            inv["stage_seconds"]["sample"] = round(time.perf_counter() - t, 1)
        if "report" in plan.stages:
            from lm import report as R

            t = time.perf_counter()
            dirs = [j.run_dir for j in plan.jobs if j.run_dir and (pathlib.Path(j.run_dir) / "record.json").is_file()]
            if not dirs:
                raise ReproduceError("no run records to report; train first (stages=[...,train,...])")
            inv["wall_seconds_before_report"] = round(clock.elapsed(), 1)
            write_invocation(plan, inv)
            out = R.report(dirs, plan.profile, plan.paths["results"], plan.paths["plots"], log=lambda m: _say(clock, m))
            inv["stage_seconds"]["report"] = round(time.perf_counter() - t, 1)
            inv["outputs"] = {k: str(v) for k, v in out.items() if isinstance(v, pathlib.Path)}
        inv["status"] = "complete" if len(complete) == len(plan.jobs) else "incomplete"
        return 0
    except ReproduceError as e:
        inv["status"] = f"error: {e}"
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        inv["status"] = "interrupted"
        print(f"interrupted; the run in progress saved a checkpoint. Rerun {plan.command} to resume.", file=sys.stderr)
        return 130
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        _STOP["signal"] = None
        inv["finished"] = _now()
        inv["wall_seconds"] = round(clock.elapsed(), 1)
        inv["load_average_end"] = _load()
        if inv["stage_seconds"] or inv["runs"]:
            path = write_invocation(plan, inv)
            if "report" in inv["stage_seconds"]:
                from lm import report as R

                R.update_wall_time(path.parent)
            _say(clock, f"{inv['status']}; wall time {_mmss(inv['wall_seconds'])} ({inv['wall_seconds']:.0f} s) "
                        f"-> {path}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    own, train, data = split_argv(argv)
    try:
        cfg = _compose_checked("lm_reproduce", own, "lm.reproduce overrides")
    except ReproduceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return reproduce(cfg, argv, train, data)


if __name__ == "__main__":
    sys.exit(main())
