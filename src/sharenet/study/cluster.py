"""`sharenet study SPEC --backend ray`: a study's runs as Ray tasks on a cluster (docs/cluster.md).

Ray Core schedules; sharenet adds nothing of a scheduler. The driver plans as the local pool does
(done / partial / new, the same run folders), then hands each run to Ray as one task that starts
the same `sharenet train` process on whichever node has `cpus_per_run` CPUs free, always with
`--resume auto`: when a node is lost, Ray retries the task elsewhere (`retries` times) and the run
continues from its newest checkpoint, which the project's resume makes bitwise the run that was
lost. What this needs of the cluster and what it guarantees:

- Shared storage. Every node must see the study folder (and the driver's working directory, where
  relative paths start) at the same path: checked before any run starts by a probe task on each
  node, which reads a token the driver wrote; a node that cannot is named in one line.
- One trainer per run folder: the trainer's lease (lease.py). A lost node's trainer is stopped
  with a checkpoint when its Ray worker dies (the parent-death signal), and the retry waits for
  its lease to go.
- Signals: SIGTERM or Ctrl-C on the driver writes a stop file in the study folder; every task
  passes the signal on to its trainer, which writes a checkpoint and stops, and queued tasks do
  not start; the driver exits 143 / 130 as the local pool does, and rerunning the command continues.
- No phoning home: usage statistics are off in the driver and in every task (RAY_USAGE_STATS_ENABLED=0);
  nodes started by hand take `ray start --disable-usage-stats`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ..engine.stop import SIGNALS, SignalScope
from ..errors import SharenetError
from ..lease import STALE_S, holder, live
from ..rundir import TRAIN_LOG, RunDir
from ..storage import atomic_write
from .runner import StudySpec, count_outcome, pending, study_stopped, train_command

STOP = ".stop"  # in the study folder: the signal the driver received, for every task to pass on
NO_USAGE_STATS = {"RAY_USAGE_STATS_ENABLED": "0"}
PROBE_S = 120.0  # a node's probe answers within this (a worker process started on a loaded node), or is named


def _ray():
    os.environ.update(NO_USAGE_STATS)  # before Ray is imported: it reads the setting then
    try:
        import ray
    except ImportError:
        raise SharenetError("--backend ray needs Ray: pip install 'sharenet[ray]'") from None
    return ray


def run_study_ray(
    spec: StudySpec,
    address: str | None = None,
    cpus_per_run: int = 1,
    retries: int = 3,
    max_runs: int | None = None,
    dry_run: bool = False,
    log=print,
) -> dict[str, int]:
    """Run what is not done yet as Ray tasks; returns counts of done / ran / failed / left runs, as
    `run_study`. `address`: a running cluster's head (HOST:PORT, or "auto"); None starts Ray on
    this machine alone."""
    if cpus_per_run < 1:
        raise SharenetError(f"--cpus-per-run must be at least 1, not {cpus_per_run}")
    if retries < 0:
        raise SharenetError(f"--retries must be 0 or more, not {retries}")
    todo, counts = pending(spec, max_runs, dry_run, log)
    if not todo:
        return counts
    ray = _ray()
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SharenetError(f"cannot reach the Ray cluster at {address or 'this machine'}: {e}") from None
    cwd = os.getcwd()
    root = Path(cwd, spec.out)
    root.mkdir(parents=True, exist_ok=True)
    stop = root / f"{STOP}-{uuid.uuid4().hex[:12]}"  # this driver's own: a rerun or a second driver has another
    try:
        with StopFile(stop) as received:  # from here on (Ray installs its own SIGTERM handler at init)
            check_storage(ray, root, cpus_per_run)
            task = ray.remote(train_task)
            refs = {}
            for run in todo:
                if received.signum:  # stopped while submitting: the rest stay as they are
                    counts["left"] += 1
                    continue
                cmd = train_command(spec, run, resume=True)
                options = {"num_cpus": cpus_per_run, "max_retries": retries, "name": run.out.name}
                refs[task.options(**options).remote(cmd, cwd, str(run.out), cpus_per_run, str(stop))] = run
                log(f"queued {run.out}")
            _wait(ray, refs, counts, log, received)
    finally:
        ray.shutdown()
        stop.unlink(missing_ok=True)
    if received.signum:
        raise study_stopped(received.signum)
    return counts


class StopFile(SignalScope):
    """The driver's stop signal, written into the study folder (whole, by a rename) for every
    task to pass on to its trainer."""

    def __init__(self, path: Path):
        self.path, self.signum = path, 0

    def on_signal(self, signum: int, frame) -> None:
        if not self.signum:
            self.signum = signum
            atomic_write(self.path, lambda tmp: tmp.write_text(str(signum)))


def _wait(ray, refs: dict, counts: dict, log, received: StopFile) -> None:
    """Collect the tasks as they end, counting each as the local pool does."""
    waiting = list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1, timeout=0.5)
        for ref in done:
            run = refs[ref]
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:  # the task failed in Ray, or its retries were spent on lost nodes
                counts["failed"] += 1
                log(f"FAILED ({type(e).__name__}): {run.out}; rerun the study to retry it")
                continue
            if result["returncode"] is None:  # stopped before it started
                counts["left"] += 1
                continue
            count_outcome(run, result["returncode"], received.signum, counts, log, logged=True)


def check_storage(ray, root: Path, cpus_per_run: int) -> None:
    """Every node that can take a run sees the study folder at `root`: a probe task pinned to each
    reads a token the driver wrote there. One line names the first node that cannot."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= cpus_per_run]
    if not nodes:
        raise SharenetError(f"no node of the Ray cluster has {cpus_per_run} CPUs for a run (--cpus-per-run)")
    token = uuid.uuid4().hex
    probe = root / f".probe-{token}"
    probe.write_text(token)
    try:
        look = ray.remote(sees)
        refs = {}
        for n in nodes:  # num_cpus 0: a node busy with runs still answers
            pinned = look.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], False))
            refs[pinned.remote(str(probe), os.getcwd())] = n
        for ref, node in refs.items():
            try:
                seen = ray.get(ref, timeout=PROBE_S)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
                seen = f"no answer ({type(e).__name__})"
            if seen != token:
                raise SharenetError(
                    f"node {node['NodeManagerAddress']} ({node['NodeID'][:12]}) cannot see the study folder {root}: "
                    "every node needs it (and the data) at the same path, on storage they share"
                )
    finally:
        probe.unlink(missing_ok=True)


def sees(path: str, cwd: str) -> str | None:
    """On a node: the token at `path`, or None where the node cannot read it or has no `cwd`
    (the driver's working directory, where a spec's relative paths start)."""
    try:
        return Path(path).read_text() if os.path.isdir(cwd) else None
    except OSError:
        return None


def train_task(cmd: list[str], cwd: str, out: str, threads: int, stop: str) -> dict:
    """On a node: one run, as the local pool starts it (`threads` OMP threads, output to its
    train.log), after any lost attempt's trainer has let go of the folder. Returns its exit code,
    None when the study was stopped before it started."""
    os.environ.update(NO_USAGE_STATS)
    os.chdir(cwd)
    t0 = time.monotonic()  # a lost node's trainer: stopped by its parent's death, or its lease goes stale
    while (record := holder(Path(out))) and live(record) and time.monotonic() - t0 < 2 * STALE_S:
        time.sleep(0.5)
    waited = time.monotonic() - t0
    if RunDir(out).finished():  # a lost attempt's trainer finished it before it stopped
        return {"returncode": 0}
    if os.path.exists(stop):
        return {"returncode": None}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, *cmd[1:]]  # this node's Python (with sharenet), not the driver's path to its own
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / TRAIN_LOG, "a") as logfile:
        logfile.write(f"[sharenet study --backend ray: node {_node_id()} on {socket.gethostname()}]\n")
        if waited >= 1:
            logfile.write(f"[waited {waited:.0f} s for an earlier attempt's trainer to let go of the folder]\n")
        logfile.flush()
        proc = subprocess.Popen(
            cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_as_trainer()
        )
        try:
            passed = False
            while proc.poll() is None:
                if not passed and os.path.exists(stop):
                    proc.send_signal(int(Path(stop).read_text()))
                    passed = True
                time.sleep(0.2)
        finally:  # the task itself interrupted: the trainer stops with a checkpoint, not orphaned
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
    return {"returncode": proc.returncode}


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _as_trainer():
    """What the trainer's process does before exec: take SIGINT, SIGTERM and SIGUSR1 again (Ray
    starts its workers with SIGINT blocked, and a child inherits the mask), and on Linux ask for
    SIGTERM when the Ray worker that started it dies (a lost node), so that it writes a checkpoint
    and lets go of the run folder; elsewhere the retry waits for its lease to go stale. libc is
    loaded here, in the parent: nothing is loaded between fork and exec."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    parent = os.getpid()

    def before_exec() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the worker died before the request: stop now
                os.kill(os.getpid(), signal.SIGTERM)

    return before_exec
