"""The run configuration: composing it, resolving its settings, checking it, fingerprinting it.

Everything here happens before any work and before any file is touched: a bad value stops the
command with a message that names the key, the value and the valid choices.

* :func:`compose` - a config of ``conf/<name>.yaml`` with overrides, outside a Hydra app;
* :func:`settings` - steps, batch, optimizer, evaluation settings after the profile's and the
  task's defaults (the task's ``default_*`` class attributes: no data are loaded);
* :func:`validate` - sizes, dtypes, devices, names, and a dry run of the model on a tiny batch;
* :func:`identity` - spec, fingerprint, setting fingerprint and folder of a run;
* :func:`expand_sweep` - the jobs of a multirun (``hydra.sweeper.params`` x the command line),
  so a whole sweep is checked before its first run starts.
"""
from __future__ import annotations

import inspect
import pathlib
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

REPO = pathlib.Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"

from tasks.base import register_resolvers  # noqa: E402  (${repo:} for conf/paths)

register_resolvers()


class ConfigError(ValueError):
    """A config that cannot run; the message says which key and what is valid."""


def compose(overrides: list[str] | None = None, config_name: str = "train", return_hydra_config: bool = False):
    from hydra import compose as hcompose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hcompose(config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hcompose(config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config)


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The config without its ``hydra`` node (which only resolves inside a running Hydra app)."""
    if "hydra" not in cfg:
        return cfg
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return OmegaConf.create(plain)


def choice(group: str, cfg: DictConfig) -> str:
    """The name chosen for a config group (``model=stu`` -> ``stu``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices[group]
    except (ValueError, KeyError):
        pass
    hc = cfg.get("hydra") if isinstance(cfg, DictConfig) else None
    if hc is not None and OmegaConf.select(cfg, f"hydra.runtime.choices.{group}") is not None:
        return str(OmegaConf.select(cfg, f"hydra.runtime.choices.{group}"))
    return str(cfg.get(f"{group}_name") or group)


def task_class(task_cfg) -> type:
    from hydra.utils import get_class

    target = task_cfg.get("_target_") if task_cfg is not None else None
    if not target:
        raise ConfigError("the task config has no _target_")
    try:
        return get_class(str(target))
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"task _target_ {target!r} cannot be imported: {e}") from None


# ----------------------------------------------------------------------------------------- settings
def _profile_value(cfg: DictConfig, key: str, task_name: str):
    table = OmegaConf.select(cfg, f"profile.{key}")
    if table is None:
        return None
    return table.get(task_name) if isinstance(table, DictConfig) else None


def regime_settings(cfg: DictConfig, cls) -> dict[str, Any]:
    """The training settings of the run's regime (``conf/regime/``) when its task follows regimes
    (``uses_regime``: the MuJoCo tasks), else {}."""
    if not getattr(cls, "uses_regime", False):
        return {}
    got = OmegaConf.select(cfg, "regime.settings")
    return OmegaConf.to_container(got, resolve=True) if got is not None else {}


def settings(cfg: DictConfig, task_name: str) -> dict[str, Any]:
    """Steps, batch size, optimizer and evaluation settings of a run. Each comes from the first of:
    the run's own config (command line, experiment), the regime (robotics tasks), the profile, the
    task's defaults. ``epochs`` (regime) sets the steps to that many passes over the training data;
    ``early_stopping`` evaluates ``evals`` times per run and stops after ``patience`` evaluations
    without a new best."""
    cls = task_class(cfg.task)
    reg = regime_settings(cfg, cls)
    steps = cfg.get("steps")
    epochs = None
    if steps is None and reg.get("epochs") is not None:
        epochs = reg["epochs"]
        require_int("regime.settings.epochs", epochs)
    bs = cfg.get("batch_size")
    bs = bs if bs is not None else reg.get("batch_size")
    bs = bs if bs is not None else _profile_value(cfg, "batch_size", task_name)
    bs = bs if bs is not None else cls.default_batch_size
    if epochs is not None:
        require_int("batch_size", bs)
        try:
            steps = int(epochs) * cls.steps_per_epoch_from_config(OmegaConf.to_container(cfg.task, resolve=True),
                                                                  int(bs), cfg)
        except (OSError, ValueError) as e:
            raise ConfigError(str(e)) from None
    steps = steps if steps is not None else _profile_value(cfg, "steps", task_name)
    steps = steps if steps is not None else cls.default_steps
    opt = dict(cls.default_optimizer)
    opt.update(reg.get("optimizer") or {})
    opt.update({k: v for k, v in OmegaConf.to_container(cfg.optimizer, resolve=True).items() if v is not None})
    opt.setdefault("schedule", "constant")
    opt.setdefault("warmup_frac", 0.0)
    points = OmegaConf.select(cfg, "profile.curve_points", default=40) or 40
    require_int("steps", steps)
    require_int("profile.curve_points", points)
    early = reg.get("early_stopping")
    every = cfg.get("eval_every")
    if every is None and early:
        require_int("regime.settings.early_stopping.evals", early.get("evals"))
        every = max(1, int(steps) // int(early["evals"]))
    every = every if every is not None else max(1, int(steps) // int(points))
    out = {"steps": steps, "batch_size": bs, "optimizer": opt, "eval_every": every}
    if epochs is not None:
        out["epochs"] = int(epochs)
    if early:
        require_int("regime.settings.early_stopping.patience", early.get("patience"))
        out["early_stopping"] = {"patience": int(early["patience"]), "evals": int(early.get("evals") or 0),
                                 "restore_best": bool(early.get("restore_best", True))}
    return out


# --------------------------------------------------------------------------------------- validation
def require_int(key: str, value, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum``, else :class:`ConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")
    return value


def require_number(key: str, value, positive: bool = False, allow_none: bool = True) -> float | None:
    """``value`` as a float if it is a finite number (> 0 with ``positive``, else >= 0)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r} ({type(value).__name__})")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{key} must be finite, got {value}")
    if positive and value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")
    if not positive and value < 0:
        raise ConfigError(f"{key} must be >= 0, got {value}")
    return float(value)


def _int_fields(cls) -> dict[str, bool]:
    """Parameters of ``cls.__init__`` annotated ``int`` (not ``int | None``): name -> may be 0."""
    out = {}
    for name, p in inspect.signature(cls).parameters.items():
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        if ann == "int":
            out[name] = "seed" in name
    return out


def check_fields(prefix: str, cfg: dict[str, Any], cls) -> None:
    """Integer fields of a model, mixer or task config are integers >= 1 (>= 0 for seeds)."""
    for name, may_be_zero in _int_fields(cls).items():
        if name in cfg:
            require_int(f"{prefix}.{name}", cfg[name], 0 if may_be_zero else 1)


def validate(cfg: DictConfig, task_name: str, device: str | None = None, dry_run: bool = True) -> dict[str, Any]:
    """Check a run config before any work; return its resolved settings. ``dry_run`` builds the
    model on the run's device and dtype and runs one forward and backward on a tiny batch (global
    RNG untouched), so a model that cannot run fails here with its config named."""
    from benchmarks.loop import OPTIMIZERS, SCHEDULES, resolve_device, resolve_dtype
    from models import _locate

    cfg = without_hydra(cfg)
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001  (an interpolation that cannot resolve)
        raise ConfigError(f"the config does not resolve: {e}") from None
    try:
        dtype = resolve_dtype(str(cfg.dtype))
        dev = resolve_device(device or str(cfg.device))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    require_int("seed", container.get("seed"), 0)
    for key in ("threads",):
        if container.get(key) is not None:
            require_int(key, container[key])
    require_int("checkpoint_every", container.get("checkpoint_every") or 0, 0)
    require_int("trial_batch", container.get("trial_batch", 1))
    if container.get("trials") is not None:
        require_int("trials", container["trials"])
    from benchmarks.trials import batch_trials_setting

    batch_trials_setting(container.get("batch_trials", "auto"))
    from benchmarks import trackers

    trackers.check(cfg)
    require_int("eval_size", container.get("eval_size"))
    require_number("diverge_loss", container.get("diverge_loss"), positive=True)
    s = settings(cfg, task_name)
    require_int("steps", s["steps"])
    require_int("batch_size", s["batch_size"])
    require_int("eval_every", s["eval_every"])
    opt = s["optimizer"]
    if str(opt.get("name", "")).lower() not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer.name {opt.get('name')!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    require_number("optimizer.lr", opt.get("lr"), positive=True, allow_none=False)
    require_number("optimizer.weight_decay", opt.get("weight_decay"))
    require_number("optimizer.grad_clip", opt.get("grad_clip"), positive=True)
    require_number("optimizer.warmup_frac", opt.get("warmup_frac"))
    if (opt.get("schedule") or "constant") not in SCHEDULES:
        raise ConfigError(f"unknown optimizer.schedule {opt.get('schedule')!r}; valid schedules: {', '.join(SCHEDULES)}")

    # the task (class and integer fields; data are not loaded)
    tcls = task_class(cfg.task)
    tcfg = {k: v for k, v in container["task"].items() if k != "_target_"}
    unknown = sorted(set(tcfg) - set(inspect.signature(tcls).parameters))
    if unknown:
        raise ConfigError(f"unknown field(s) {unknown} for task {task_name!r}; valid fields: "
                          f"{', '.join(sorted(inspect.signature(tcls).parameters))}")
    check_fields("task", tcfg, tcls)
    # the model and each of its mixers
    mcfg = dict(container["model"])
    mcls = _locate(mcfg["_target_"])
    check_fields("model", mcfg, mcls)
    if mcfg.get("moe") and mcfg.get("top_k", 1) > mcfg.get("num_experts", 1):
        raise ConfigError(f"model.top_k ({mcfg['top_k']}) must be <= model.num_experts ({mcfg['num_experts']})")
    mixers = mcfg.get("mixers") or []
    mixers = [mixers] if isinstance(mixers, str) else list(mixers)
    import models

    for name in mixers:
        if "." not in str(name) and name not in models.available_mixers():
            raise ConfigError(f"unknown mixer {name!r} in model.mixers; valid mixers: {', '.join(models.available_mixers())}")
    if dry_run:
        _dry_run(cfg, container, tcls, tcfg, dev, dtype)
    return s


def shapes_of(cfg: DictConfig) -> dict[str, Any]:
    """The model shapes of ``cfg.task`` without loading data (:func:`task_shapes`), or ConfigError."""
    try:
        tcfg = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "_target_"}
        return task_shapes(task_class(cfg.task), tcfg)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"the task config does not give model shapes: {e}") from None


def task_shapes(tcls, tcfg: dict[str, Any]) -> dict[str, Any]:
    """The model shapes a task will ask for, without building it (data-backed tasks read theirs
    from class attributes: :meth:`tasks.base.Task.shapes_from_config`)."""
    return tcls.shapes_from_config(tcfg)


def _dry_run(cfg, container, tcls, tcfg, dev, dtype) -> None:
    import models

    shapes = task_shapes(tcls, tcfg)
    mcfg = dict(container["model"])
    L = int(shapes["seq_len"])
    try:
        with torch.random.fork_rng(devices=[]):
            model = models._instantiate(mcfg, "model", **shapes).to(device=dev, dtype=dtype)
            n = min(L, 8)
            if shapes.get("vocab_size"):
                x = torch.zeros(1, n, dtype=torch.long, device=dev)
            else:
                x = torch.zeros(1, n, shapes["d_in"], dtype=dtype, device=dev)
            y = model(x)
            (y.float().sum() + getattr(model, "aux_loss", torch.zeros(())).to(dev).float()).backward()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        why = f"{type(e).__name__}: {e}"
        if dtype == torch.bfloat16 and dev.type == "cpu":
            why += " (bfloat16 on a CPU: the FFT and some kernels of this model have no bfloat16 CPU path; use " \
                   "dtype=float32 or float64, or a CUDA device)"
        raise ConfigError(f"the model cannot run with this config on {dev} in {cfg.dtype}: {why}") from None


# ------------------------------------------------------------------------------------------ identity
def identity(cfg: DictConfig, model_name: str, task_name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """``spec`` (what decides the numbers), ``fingerprint``, ``setting_fingerprint`` (the same
    without the seed and everything resolved from it) and ``dir`` (the run folder)."""
    from benchmarks import runs

    cfg = without_hydra(cfg)
    s = settings(cfg, task_name)
    container = OmegaConf.to_container(cfg, resolve=True)
    container["settings"] = s
    spec = runs.run_spec(container)
    fp = runs.fingerprint(spec)
    # the setting: the same config with the seed replaced, so ${seed} interpolations drop out too
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    c2 = OmegaConf.create(plain)
    c2.seed = -1
    c2_container = OmegaConf.to_container(c2, resolve=True)
    c2_container["settings"] = s
    setting_fp = runs.fingerprint(runs.setting_spec(runs.run_spec(c2_container)))
    folder = runs.run_dir(container["paths"]["runs"], str(container["profile"]["name"]), str(cfg.experiment_name),
                          task_name, model_name, runs.label(int(cfg.seed), overrides), fp)
    return {"spec": spec, "fingerprint": fp, "setting_fingerprint": setting_fp, "dir": folder, "settings": s}


# -------------------------------------------------------------------------------------------- sweeps
def expand_sweep(sweep_params: dict[str, str] | None, overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun, as Hydra's basic sweeper makes them: the cartesian product of the
    ``hydra.sweeper.params`` entries and the command-line overrides (a command-line key wins)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    cli = parser.parse_overrides(list(overrides))
    cli_keys = {o.get_key_element() for o in cli}
    params = [f"{k}={v}" for k, v in (sweep_params or {}).items()]
    from_file = [o for o in parser.parse_overrides(params) if o.get_key_element() not in cli_keys]
    batches = BasicSweeper.split_arguments(from_file + cli, None)
    return [list(job) for batch in batches for job in batch]


def check_jobs(sweep_params: dict[str, Any] | None, overrides: list[str]) -> list[dict[str, Any]]:
    """Every job of a sweep composed and checked (:func:`validate`), with its identity: a list of
    ``{overrides, cfg (without hydra), model, task, spec, fingerprint, setting_fingerprint, dir,
    settings}``. The first bad job raises :class:`ConfigError` naming its overrides."""
    from benchmarks.trials import seed_overrides, trial_seeds, with_seed

    jobs = []
    for job in expand_sweep({k: str(v) for k, v in (sweep_params or {}).items()}, overrides):
        try:
            jc = compose(job, return_hydra_config=True)
            model, task = choice("model", jc), choice("task", jc)
            validate(jc, task)
            plain = without_hydra(jc)
            seeds = trial_seeds(plain)
            for seed in seeds:  # a job with trial_batch > 1 is one job per trial here
                ov = seed_overrides(job, seed) if len(seeds) > 1 else job
                c = plain if seed == int(plain.seed) else with_seed(plain, seed)
                ident = identity(c, model, task, ov)
                jobs.append({"overrides": ov, "cfg": c, "model": model, "task": task, **ident})
        except (ConfigError, ValueError) as e:
            raise ConfigError(f"job ({' '.join(job)}): {e}") from None
        except Exception as e:  # noqa: BLE001  (composition errors: Hydra's message names the key)
            raise ConfigError(f"job ({' '.join(job)}): {type(e).__name__}: {e}") from None
    return jobs


def sweep_params(cfg: DictConfig) -> dict[str, Any]:
    """``hydra.sweeper.params`` of a config composed with ``return_hydra_config``, resolved."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    return OmegaConf.to_container(params, resolve=True) if params else {}


def hydra_entry(run):
    """A ``@hydra.main`` on ``conf/train.yaml`` that calls ``run(cfg)``; a ConfigError leaves as a
    one-line error. The thin entry point of each ``benchmarks`` module that has a ``run(cfg)``."""
    import hydra

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
    def main(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except ConfigError as e:
            raise SystemExit(f"error: {e}") from None

    return main
