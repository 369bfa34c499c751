"""One command per paper result: ``make reproduce-<E>`` = ``python -m benchmarks.reproduce experiment=<E>``.

    python -m benchmarks.reproduce experiment=table2 profile=smoke
    python -m benchmarks.reproduce experiment=fig4 profile=paper hydra/launcher=submitit_slurm hydra.launcher.partition=gpu
    python -m benchmarks.reproduce experiment=fig2 profile=smoke model.width=64      # any Hydra override

The arguments are Hydra overrides of ``conf/train.yaml`` (parsed by Hydra's own override parser).
``conf/experiment/<E>.yaml`` declares everything: its ``kind`` and, for ``kind: train``, the sweep
(``hydra.sweeper.params``) and how it is reported (``report:``). For ``kind: train``:

1. every job of the sweep is composed and checked (sizes, names, dtypes, a dry run of each model)
   before anything runs or any file is written;
2. data the tasks need are made once, here, before the runs start (MuJoCo trajectories), and the
   folders of runs already finished in the committed ``results/<E>/<profile>/`` are written back
   from its records (``benchmarks.restore``), so a fresh clone resumes instead of retraining them;
3. the sweep runs through ``python -m benchmarks.train -m`` with the given launcher (finished runs
   are skipped, runs claimed by another process are left to it);
4. evaluations that need the trained weights run beside each run (``benchmarks.evaluation``);
5. the report reads exactly this sweep's records (``benchmarks.report``; ``benchmarks.robotics`` for
   the robotics tables) and writes ``<results>/<E>/<profile>/`` and ``<plots>/<E>/<profile>/``.

Other kinds call their module's ``run(cfg)``: ``landscape`` (Figures 3, 13, 24), ``timing``
(Table I), ``speed`` (the speed benchmark), ``filters`` (Figure 12).
"""
from __future__ import annotations

import importlib
import pathlib
import subprocess
import threading
import sys
from typing import Any

from omegaconf import OmegaConf

from benchmarks.config import CONF_DIR, REPO, ConfigError, check_jobs, compose, sweep_params, without_hydra

KINDS = {"landscape": "benchmarks.landscape", "timing": "benchmarks.timing", "speed": "benchmarks.speed",
         "filters": "benchmarks.filters", "trial_batching": "benchmarks.trial_batching",
         "sliding_window": "benchmarks.sliding_window",
         "sensitivity": "benchmarks.sensitivity"}


def experiments() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith("_"))


def _split(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(run overrides, Hydra's own: launcher and hydra.* settings)."""
    hyd = [o for o in overrides if o.lstrip("+~").startswith("hydra")]
    return [o for o in overrides if o not in hyd], hyd


def numeric_overrides(overrides: list[str]) -> list[str]:
    """The overrides that change what a declared result holds: its numbers or its sweep (not the
    experiment, profile, launcher, paths, threads, progress, ...)."""
    harmless = {"experiment", "profile", "paths", "progress", "threads", "device", "force", "checkpoint_every",
                "save_model", "logger", "evaluate", "report_only"}
    run_over, _ = _split(overrides)
    return [o for o in run_over if o.split("=", 1)[0].lstrip("+~").split(".")[0].split("/")[0] not in harmless]


def plan(overrides: list[str]) -> tuple[Any, list[dict[str, Any]]]:
    """The experiment's config and, for a training sweep, every job checked: ``(cfg, jobs)`` with
    each job's overrides, config, model/task names and identity (fingerprint, folder)."""
    run_over, _ = _split(overrides)
    names = [o.split("=", 1)[1] for o in run_over if o.split("=", 1)[0] == "experiment"]
    if not names:
        raise ConfigError(f"name the result: experiment=<name>; valid: {', '.join(experiments())}")
    if names[-1] not in experiments():
        raise ConfigError(f"unknown experiment {names[-1]!r}; valid: {', '.join(experiments())}")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(run_over)
    # a sweep on the command line (model=stu,transformer) replaces the file's; the jobs expand it
    cfg = compose([o for o, p in zip(run_over, parsed) if not p.is_sweep_override()], return_hydra_config=True)
    if cfg.kind != "train":
        return cfg, []
    jobs = check_jobs(sweep_params(cfg), run_over)
    return cfg, jobs


def prepare_data(jobs: list[dict[str, Any]]) -> None:
    """Make (or verify) each dataset the jobs need, once, before parallel runs could race for it."""
    seen = set()
    for j in jobs:
        t = OmegaConf.to_container(j["cfg"].task, resolve=True)
        if t.get("_target_") != "tasks.mujoco.task.MujocoTask":
            continue
        key = (t["env"], t["data_profile"], t.get("data_dir"), t.get("agent_path"))
        if key in seen:
            continue
        seen.add(key)
        from tasks.mujoco.dataset import make_dataset

        sizes = OmegaConf.to_container(j["cfg"].profile.data.mujoco, resolve=True)  # profile.data.mujoco.* overrides
        make_dataset(t["env"], t["data_profile"], root=t.get("data_dir"), agent_path=t.get("agent_path"),
                     overrides=sizes, progress=bool(t.get("progress", True)))


def evaluate(cfg, jobs: list[dict[str, Any]], runs: bool = True) -> None:
    """Next-step / autoregressive predictions of every finished run of the sweep, saved beside it,
    and the no-change reference once per experiment (``benchmarks.evaluation``). ``runs=False``
    (``report_only``): only the reference (seconds of work), and where its data are missing the
    table goes without it."""
    import os

    import torch

    from benchmarks import evaluation
    from benchmarks.loop import resolve_device
    from benchmarks.runs import sweep_records

    ev = OmegaConf.to_container(cfg.profile.robotics_eval, resolve=True)
    n_pred, max_traj = int(ev["predictions"]), ev.get("max_trajectories")
    root = pathlib.Path(cfg.paths.runs) / str(cfg.profile.name) / str(cfg.experiment_name)
    records = [r for r in sweep_records(jobs) if r.get("status") == "ok"]
    dev = resolve_device(cfg.device)
    threads = int(cfg.threads) if cfg.threads else (1 if dev.type == "cpu" else None)
    n_jobs = 1 if dev.type != "cpu" else max(1, min(2, os.cpu_count() or 1))
    if not runs:
        try:
            if records:
                evaluation.evaluate_baseline(records[0], n_pred, max_traj, root)
        except (Exception, SystemExit) as e:  # noqa: BLE001  (no data here: said why)
            have = evaluation.baseline_path(root, n_pred, max_traj).exists()
            print(f"[reproduce] the no-change reference could not be evaluated here ({type(e).__name__}: {e}); "
                  f"{'the saved one is used' if have else 'its row is left out'}", file=sys.stderr)
        return
    files = [evaluation.predictions_path(r, n_pred, max_traj) for r in records]
    stop = threading.Event()
    bar = threading.Thread(target=count_bar, args=(files, stop, "[eval] runs evaluated", "run"), daemon=True)
    bar.start()
    try:
        evaluation.evaluate_runs(records, n_pred, max_traj, str(dev), n_jobs, threads)
    finally:
        stop.set()
        bar.join(timeout=10)
    if records:
        if threads:
            torch.set_num_threads(threads)
        evaluation.evaluate_baseline(records[0], n_pred, max_traj, root)


def run_sweep(overrides: list[str], jobs: list[dict[str, Any]] | None = None) -> int:
    """The sweep through ``benchmarks.train -m`` (any launcher), with one overall progress bar of
    finished runs (:func:`watch`) beside the runs' own one-line messages."""

    cmd = [sys.executable, "-m", "benchmarks.train", "-m", *overrides]
    print("[reproduce] " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(jobs or [], stop), daemon=True)
    watcher.start()
    try:
        return subprocess.call(cmd)
    finally:
        stop.set()
        watcher.join(timeout=10)


def watch(jobs: list[dict[str, Any]], stop, every: float | None = None) -> int:
    """Count the sweep's finished runs (a record in each distinct run folder) until ``stop`` is set,
    as one progress bar (:func:`count_bar`). Works under every launcher: it reads the run folders,
    not the workers' output. Returns the number of finished runs."""
    folders = list({j["fingerprint"]: pathlib.Path(j["dir"]) for j in jobs}.values())
    return count_bar([f / "record.json" for f in folders], stop, "[sweep] runs finished", "run", every)


def count_bar(files: list[pathlib.Path], stop, desc: str, unit: str, every: float | None = None) -> int:
    """One progress bar of how many of ``files`` exist, until ``stop`` is set: refreshed every
    ``every`` seconds (2 on a terminal, 30 in a log file) so the elapsed time and the rate keep
    moving while a long step works. Returns how many exist at the end."""
    from tqdm.auto import tqdm

    if not files:
        stop.wait()
        return 0

    def finished() -> int:
        return sum(f.exists() for f in files)

    tty = sys.stderr.isatty()
    every = every if every is not None else (2.0 if tty else 30.0)
    bar = tqdm(total=len(files), initial=finished(), desc=desc, unit=unit, file=sys.stderr,
               dynamic_ncols=True, mininterval=0 if tty else every, smoothing=0)
    while not stop.wait(every):
        n = finished()
        if n > bar.n:
            bar.update(n - bar.n)
        else:
            bar.refresh()
    bar.update(max(0, finished() - bar.n))
    bar.close()
    return bar.n


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__ + "\nexperiments: " + ", ".join(experiments()))
        return 0
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        OverridesParser.create().parse_overrides(argv)  # a malformed override fails here, with Hydra's message
        cfg, jobs = plan(argv)
    except ConfigError as e:
        print(f"error: {e}\nnothing was run", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (Hydra's composition errors name the bad key)
        print(f"error: {type(e).__name__}: {e}\nnothing was run", file=sys.stderr)
        return 2
    name, profile = str(cfg.experiment_name), str(cfg.profile.name)
    changed = numeric_overrides(argv)
    if changed and pathlib.Path(str(cfg.paths.results)).resolve() == (REPO / "results").resolve():
        print(f"error: {' '.join(changed)} change(s) the numbers, so the results would replace the committed "
              f"results/{name}/{profile}/ of the declared experiment. Write them elsewhere with "
              f"paths.results=<dir> paths.plots=<dir> (or FSB_RESULTS / FSB_PLOTS)\nnothing was run", file=sys.stderr)
        return 2
    if cfg.kind != "train":
        if cfg.kind not in KINDS:
            print(f"error: unknown kind {cfg.kind!r} in conf/experiment/{name}.yaml; valid: train, "
                  f"{', '.join(KINDS)}", file=sys.stderr)
            return 2
        try:
            importlib.import_module(KINDS[str(cfg.kind)]).run(without_hydra(cfg))
        except ConfigError as e:
            print(f"error: {e}\nnothing was run", file=sys.stderr)
            return 2
        return 0
    distinct = {j["fingerprint"] for j in jobs}
    print(f"[reproduce] {name} at profile {profile}: {len(jobs)} job(s), {len(distinct)} distinct run(s), "
          f"all checked", file=sys.stderr, flush=True)
    from benchmarks.restore import restore

    report_only = bool(cfg.get("report_only"))
    if report_only:
        # nothing is trained, evaluated or made: the committed runs are written back (as a fresh clone
        # would resume them) and the report covers every run of the sweep that has its record
        restore(jobs, pathlib.Path(str(cfg.paths.results)) / name / profile, force=False)
        done = sum((pathlib.Path(j["dir"]) / "record.json").exists() for j in {j["fingerprint"]: j for j in jobs}.values())
        print(f"[reproduce] report_only=true: reporting the {done} of {len(distinct)} run(s) finished so far; "
              f"nothing trained or evaluated", file=sys.stderr, flush=True)
        if not done:
            print(f"error: no run of this sweep has finished under {cfg.paths.runs}; nothing to report", file=sys.stderr)
            return 2
    else:
        prepare_data(jobs)
        restore(jobs, pathlib.Path(str(cfg.paths.results)) / name / profile, force=bool(cfg.get("force")))
        code = run_sweep(argv, jobs)
        if code:
            print(f"error: the sweep exited with {code}; finished runs are kept, rerun the same command to resume",
                  file=sys.stderr)
            return code
    rep = OmegaConf.to_container(cfg.report, resolve=True) or {}
    paths = cfg.paths
    kind = rep.get("kind", "curves")
    if kind == "robotics" and (cfg.get("evaluate", True) or report_only):
        evaluate(cfg, jobs, runs=not report_only)
    if kind in ("robotics", "ablation"):
        from benchmarks import robotics

        robotics.report_table(cfg, jobs)
    else:
        from benchmarks.report import report

        report(name, profile, paths.runs, paths.results, paths.plots, fingerprints=distinct, rep=rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
