"""`sharenet study SPEC.yaml`: every (model, scheme, seed) of a grid, each in its own run directory.

A finished run (summary.json present) is skipped, an interrupted one resumes from its newest
checkpoint, so a study can be run in chunks (`--max-runs`, Ctrl-C, a pre-empted machine) and
simply started again. Each run is a separate `sharenet train` process: one failing run is
reported and the study goes on.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.config import ConfigError, apply, flatten, read_yaml
from ..engine.recipes import DEFAULT_RECIPE, recipe_config
from ..engine.stop import SignalScope, Stopped
from ..engine.validate import check_config
from ..rundir import TRAIN_LOG, RunDir

SPEC_KEYS = {"name", "description", "recipe", "base", "models", "schemes", "seeds", "out", "extra_runs"}


@dataclass(frozen=True)
class StudySpec:
    name: str
    recipe: str
    base: dict  # config overrides shared by every run ({"optim.epochs": 10, ...})
    models: tuple[str, ...]
    schemes: tuple[str, ...]
    seeds: tuple[int, ...]
    out: Path
    extra_runs: tuple[dict, ...] = field(default_factory=tuple)  # [{model:, share:, name:, set:}] beyond the grid


@dataclass(frozen=True)
class PlannedRun:
    model: str
    share: str
    seed: int
    out: Path
    sets: tuple[tuple[str, object], ...] = ()  # this run's own overrides ({"model.params": 172666, ...})

    def state(self) -> str:
        """ "done", "partial" or "new", as its run directory says."""
        return RunDir(self.out).state()


def load_spec(path: str | Path) -> StudySpec:
    tree = read_yaml(path)
    unknown = set(tree) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown study keys {sorted(unknown)}; valid: {', '.join(sorted(SPEC_KEYS))}")
    # a grid (models x schemes x seeds), or only extra runs (each with its seeds), or both
    grid = [key for key in ("models", "schemes", "seeds") if key in tree]
    if grid or not tree.get("extra_runs"):
        for key in ("models", "schemes", "seeds"):
            if not isinstance(tree.get(key), list) or not tree[key]:
                raise ConfigError(f"{path}: '{key}' must be a non-empty list (or give extra_runs alone)")
    spec = StudySpec(
        name=str(tree.get("name", Path(path).stem)),
        recipe=str(tree.get("recipe", DEFAULT_RECIPE)),
        base=flatten(tree.get("base") or {}, str(path)),
        models=tuple(tree.get("models", ())),
        schemes=tuple(tree.get("schemes", ())),
        seeds=tuple(int(s) for s in tree.get("seeds", ())),
        out=Path(tree.get("out", f"runs/{Path(path).stem}")),
        extra_runs=tuple(tree.get("extra_runs") or ()),
    )
    for run in plan_runs(spec):  # every run's config is valid before the first one starts
        check_config(_config(spec, run))
    return spec


EXTRA_KEYS = {"model", "share", "name", "set", "seeds"}


def plan_runs(spec: StudySpec) -> list[PlannedRun]:
    """The grid's runs, then the extra ones: those with `set:` (their own overrides, e.g. a budget
    or a scheme's options) are named by `name:` (default model-share), the run folder name-sSEED.
    An extra run's `seeds:` replaces the spec's for it (fewer seeds where a line needs fewer)."""
    pairs = [
        (m, s, f"{m}-{s}", (), spec.seeds) for m, s in itertools.product(spec.models, spec.schemes) if _valid(m, s)
    ]
    for r in spec.extra_runs:
        unknown = set(r) - EXTRA_KEYS
        if unknown or "model" not in r:
            raise ConfigError(f"extra run {r}: needs 'model'; valid keys: {', '.join(sorted(EXTRA_KEYS))}")
        share = r.get("share", "none")
        sets = tuple(flatten(r.get("set") or {}, f"extra run {r.get('name', r['model'])}").items())
        name = r.get("name", f"{r['model']}-{share}")
        seeds = r.get("seeds", spec.seeds)  # without a grid, each extra run names its seeds
        if not isinstance(seeds, (list, tuple)) or not seeds or not all(isinstance(x, int) for x in seeds):
            raise ConfigError(f"extra run {name!r}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
        if name in [p[2] for p in pairs]:
            if sets or "seeds" in r:
                raise ConfigError(
                    f"extra run {name!r} has its own settings but the name of another run: give it a name"
                )
            continue
        pairs.append((r["model"], share, name, sets, tuple(seeds)))
    # seed-major: after the first runs, every configuration has one seed to report
    order = list(dict.fromkeys([*spec.seeds, *(x for p in pairs for x in p[4])]))
    return [
        PlannedRun(m, s, seed, spec.out / f"{name}-s{seed}", sets)
        for seed in order
        for m, s, name, sets, seeds in pairs
        if seed in seeds
    ]


def _valid(model: str, share: str) -> bool:
    from ..models import create_model
    from ..models.budget import count_on_meta

    try:
        count_on_meta(create_model, name=model, share=share)
        return True
    except ValueError:  # e.g. block sharing on a bottleneck family: not part of the grid
        return False


def _config(spec: StudySpec, run: PlannedRun):
    cfg = apply(recipe_config(spec.recipe), {**spec.base, **dict(run.sets)})
    return apply(
        cfg, {"model.name": run.model, "model.share": run.share, "run.seed": run.seed, "run.out": str(run.out)}
    )


def train_command(spec: StudySpec, run: PlannedRun, resume: bool = False) -> list[str]:
    """The run's `sharenet train` command line; with --resume auto when it has a checkpoint, or
    always with `resume` (a cluster task that may be a retry of a lost one)."""
    sets = [f"{k}={_yaml_value(v)}" for k, v in {**spec.base, **dict(run.sets)}.items()]
    cmd = [
        sys.executable,
        "-m",
        "sharenet",
        "train",
        "--recipe",
        spec.recipe,
        "--model",
        run.model,
        "--share",
        run.share,
        "--seed",
        str(run.seed),
        "--out",
        str(run.out),
        "--no-progress",
    ]
    cmd += [arg for s in sets for arg in ("--set", s)]
    if resume or run.state() == "partial":
        cmd += ["--resume", "auto"]
    return cmd


def _yaml_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v).lower() if isinstance(v, bool) else str(v)


def run_study(
    spec: StudySpec, max_runs: int | None = None, dry_run: bool = False, jobs: int = 1, log=print
) -> dict[str, int]:
    """Run what is not done yet, `jobs` runs at a time; returns counts of done / ran / failed / left runs.

    With jobs > 1 the machine's cores are split evenly between the runs (OMP_NUM_THREADS) and each
    run's output goes to its own train.log: on small CPU models two 1-thread runs get more images/s
    through than one 2-thread run, because intra-op threading of small kernels scales poorly.
    """
    todo, counts = pending(spec, max_runs, dry_run, log)
    running: list[tuple[PlannedRun, subprocess.Popen, object]] = []
    relay = SignalRelay(running)
    try:
        with relay:
            _drive(spec, todo, running, counts, jobs, relay, log)
    finally:  # an error in the runner: let the runs stop at a clean point
        for _, proc, _ in running:
            proc.wait()
    if relay.signum:
        raise study_stopped(relay.signum)
    return counts


def study_stopped(signum: int) -> Stopped:
    """What a study stopped by a signal raises (the CLI exits 128 + signum)."""
    name = signal.Signals(signum).name
    return Stopped(
        signum,
        f"stopped by {name}: the runs it reached wrote a checkpoint and stopped; run the study again to continue them",
    )


def pending(spec: StudySpec, max_runs: int | None, dry_run: bool, log) -> tuple[list[PlannedRun], dict[str, int]]:
    """The runs to start now (not done, within `max_runs`), and the counts so far: the finished
    runs as done, the ones beyond `max_runs` (or all, for a dry run) as left."""
    counts = {"done": 0, "ran": 0, "failed": 0, "left": 0}
    todo = []
    for run in plan_runs(spec):
        state = run.state()
        if state == "done":
            counts["done"] += 1
        elif dry_run or (max_runs is not None and len(todo) >= max_runs):
            counts["left"] += 1
            log(f"{'would run' if dry_run else 'left'}: {run.out} ({state})")
        else:
            todo.append(run)
    return todo, counts


def count_outcome(run: PlannedRun, returncode: int, signum: int, counts: dict, log, logged: bool) -> None:
    """Count an ended run: stopped with a checkpoint by the study's signal (left), finished (ran)
    or failed; `logged`: its output went to its train.log, which a failure names."""
    if signum and returncode == 128 + signum:
        counts["left"] += 1
        log(f"stopped {run.out} with a checkpoint")
        return
    counts["ran" if returncode == 0 else "failed"] += 1
    where = f" (its output: {run.out / TRAIN_LOG})" if logged else ""
    log(
        f"finished {run.out}"
        if returncode == 0
        else f"FAILED ({returncode}): {run.out}{where}; rerun the study to retry it"
    )


class SignalRelay(SignalScope):
    """Passes SIGTERM, SIGINT and SIGUSR1 on to the running `sharenet train` processes, which stop
    after a step with a checkpoint (the runs live in their own sessions, so a terminal's Ctrl-C
    reaches them once, through here); no new run starts after one."""

    def __init__(self, running: list):
        self.running, self.signum = running, 0

    def on_signal(self, signum: int, frame) -> None:
        self.signum = self.signum or signum
        for _, proc, _ in self.running:
            if proc.poll() is None:
                proc.send_signal(signum)


def _drive(spec, todo: list, running: list, counts: dict, jobs: int, relay: SignalRelay, log) -> None:
    """Start runs while slots are free (none after a signal), until every started run has ended."""
    while (todo and not relay.signum) or running:
        while todo and not relay.signum and len(running) < max(1, jobs):
            running.append(_start(spec, todo.pop(0), jobs, log))
        time.sleep(0.2)
        for item in [r for r in running if r[1].poll() is not None]:
            run, proc, logfile = item
            running.remove(item)
            if logfile is not None:
                logfile.close()
            count_outcome(run, proc.returncode, relay.signum, counts, log, logged=logfile is not None)


def _start(spec: StudySpec, run: PlannedRun, jobs: int, log):
    log(f"{'resuming' if run.state() == 'partial' else 'running'} {run.out}")
    run.out.mkdir(parents=True, exist_ok=True)
    cmd = train_command(spec, run)
    if jobs <= 1:
        return run, subprocess.Popen(cmd, start_new_session=True), None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // jobs)), "PYTHONUNBUFFERED": "1"}
    logfile = open(run.out / TRAIN_LOG, "a")  # noqa: SIM115 (closed when the run ends)
    proc = subprocess.Popen(cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    return run, proc, logfile
