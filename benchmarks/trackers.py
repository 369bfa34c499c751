"""Optional experiment trackers (``logger=none|csv|tensorboard|wandb``, ``conf/logger/``).

A tracker receives what the run writes to its own ``curve.csv`` (every curve point: step, train
loss, evaluation metrics, wall time) and, at the end, the final metrics and status. It never
replaces the suite's records: a run's record, curve and fingerprint are the same with any logger
(``logger`` is not part of the fingerprint), and a tracker that fails to start stops the run before
it trains, with the reason.

* ``csv``: one CSV per run under ``logger.dir`` (no extra package);
* ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` event files, one folder per run (needs
  the ``tensorboard`` package, in the ``[trackers]`` extra);
* ``wandb``: one W&B run per suite run, offline by default (``logger.mode``), grouped by
  experiment, its config the run's resolved config (needs ``wandb``, in the ``[trackers]`` extra).
"""
from __future__ import annotations

import csv
import io
import pathlib
from typing import Any

LOGGERS = ("none", "csv", "tensorboard", "wandb")


def logger_name(cfg) -> str:
    node = cfg.get("logger") if hasattr(cfg, "get") else None
    return str((node or {}).get("name", "none")) if node is not None else "none"


def check(cfg) -> None:
    """Before any work: a known logger whose package is installed."""
    from benchmarks.config import ConfigError

    name = logger_name(cfg)
    if name not in LOGGERS:
        raise ConfigError(f"unknown logger {name!r}; valid loggers: {', '.join(LOGGERS)}")
    need = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name)
    if need:
        import importlib.util

        if importlib.util.find_spec(need) is None:
            raise ConfigError(f"logger={name} needs the {need!r} package: pip install -e '.[trackers]' (make setup installs it)")
    if name == "wandb" and str(cfg.logger.get("mode", "offline")) not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be offline, online or disabled; got {cfg.logger.mode!r}")


class Tracker:
    """No tracker: every call does nothing."""

    def log(self, point: dict[str, Any]) -> None:
        pass

    def finish(self, final: dict[str, float], status: str) -> None:
        pass


class CSVTracker(Tracker):
    def __init__(self, path: pathlib.Path):
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def log(self, point):
        self.rows.append(dict(point))
        self._write()

    def finish(self, final, status):
        self.rows.append({"step": "final", "status": status, **{f"final_{k}": v for k, v in final.items()}})
        self._write()

    def _write(self):
        from benchmarks.records import atomic_write_text

        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


class TensorBoardTracker(Tracker):
    def __init__(self, folder: pathlib.Path, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(log_dir=str(folder))
        self.w.add_text("config", "```\n" + _yaml(config) + "\n```", 0)

    def log(self, point):
        step = int(point["step"])
        for k, v in point.items():
            if k != "step" and isinstance(v, (int, float)):
                self.w.add_scalar(k, float(v), step)

    def finish(self, final, status):
        for k, v in final.items():
            self.w.add_scalar(f"final/{k}", float(v), 0)
        self.w.add_text("status", status, 0)
        self.w.close()


class WandbTracker(Tracker):
    def __init__(self, spec: dict[str, Any], name: str, config: dict[str, Any]):
        import wandb

        folder = pathlib.Path(spec["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=spec.get("project") or "flash-stu-bench", entity=spec.get("entity"),
                              mode=str(spec.get("mode", "offline")), dir=str(folder), name=name,
                              group=spec.get("group"), tags=list(spec.get("tags") or []), config=config,
                              reinit="create_new", settings=wandb.Settings(silent=True, console="off"))

    def log(self, point):
        self.run.log({k: v for k, v in point.items() if k != "step"}, step=int(point["step"]))

    def finish(self, final, status):
        self.run.summary.update({**{f"final_{k}": v for k, v in final.items()}, "status": status})
        self.run.finish()


def _yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=True)


def make(cfg, ident: dict[str, Any], model_name: str, task_name: str) -> Tracker:
    """The tracker of one run (``ident``: its identity, for the folder and run names)."""
    from omegaconf import OmegaConf

    name = logger_name(cfg)
    if name == "none":
        return Tracker()
    spec = OmegaConf.to_container(cfg.logger, resolve=True)
    label = pathlib.Path(ident["dir"]).name
    rel = pathlib.Path(str(cfg.experiment_name)) / str(cfg.profile.name) / task_name / model_name
    config = OmegaConf.to_container(cfg, resolve=True)
    config = {**config, "fingerprint": ident["fingerprint"], "setting_fingerprint": ident["setting_fingerprint"]}
    if name == "csv":
        return CSVTracker(pathlib.Path(spec["dir"]) / rel / f"{label}.csv")
    if name == "tensorboard":
        return TensorBoardTracker(pathlib.Path(spec["dir"]) / rel / label, config)
    return WandbTracker(spec, f"{cfg.experiment_name}/{task_name}/{model_name}/{label}", config)
