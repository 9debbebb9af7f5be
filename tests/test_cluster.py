"""`sharenet study --backend ray` on a real multi-node Ray cluster on this machine (a head that
runs nothing and two 1-CPU worker nodes, each its own raylet), and the run folder's lease: the
local pool's records, a node killed mid-run, SIGTERM on the driver, a node that cannot see the
study folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from sharenet.lease import LEASE

from .helpers import newest_checkpoint_step
from .test_train_cli import sharenet_cli

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before Ray is imported: no usage report
ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'sharenet[ray]'")

# what differs between two runs of the same thing: clocks, speeds, the day, where it was written
TIMES = {"date", "img_per_s", "data_fraction", "data_s", "epoch_s", "eval_s", "outside_steps_fraction", "step_s"}
TIMES |= {"seconds", "wall_s", "train_img_per_s", "out"}


ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # what each Ray task gives its run (--cpus-per-run 1): the same numerics


def _without_times(tree):
    if isinstance(tree, dict):
        return {k: _without_times(v) for k, v in tree.items() if k not in TIMES}
    if isinstance(tree, list):
        return [_without_times(v) for v in tree]
    return tree


def _records(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    files = {name: json.loads((run / name).read_text()) for name in ("config.json", "summary.json")}
    return _without_times({**files, "metrics": rows})


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    health = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": health},
    )
    for _ in range(2):
        c.add_node(num_cpus=1)
    c.wait_for_nodes(timeout=120)
    yield c
    c.shutdown()


def _spec(path: Path, fmnist_dir, schemes: list[str], max_steps: int, out: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": path.stem,
                "recipe": "fashion-mnist",
                "models": ["resnet8"],
                "schemes": schemes,
                "seeds": [0],
                "out": out,
                "base": {
                    "data": {"data_dir": str(fmnist_dir)},
                    "optim": {"batch_size": 32, "epochs": 10**5},
                    "run": {
                        "max_steps": max_steps,
                        "log_every": 2,
                        "checkpoint_every": 4,
                        "compile": "off",
                        "tta": False,
                    },
                },
            }
        )
    )
    return path


def _ray_study(spec: Path, cluster, cwd: Path, check=True) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "sharenet",
        "study",
        str(spec),
        "--backend",
        "ray",
        "--address",
        cluster.address,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_ray_study_writes_the_local_pools_records(cluster, fmnist_dir, tmp_path):
    """Three short runs as Ray tasks on two worker nodes: the same run folders, and the same
    config, metrics and summary as the local pool's runs of the same spec (clocks aside); a second
    call finds them all done."""
    schemes = ["none", "stage", "block"]
    local = _spec(tmp_path / "local.yaml", fmnist_dir, schemes, 8, "local")
    sharenet_cli("study", str(local), cwd=tmp_path, env=ONE_THREAD)
    spec = _spec(tmp_path / "cluster.yaml", fmnist_dir, schemes, 8, "cluster")  # relative: from the driver's folder
    proc = _ray_study(spec, cluster, cwd=tmp_path)
    assert "0 already done, 3 ran, 0 failed, 0 left" in proc.stdout
    for scheme in schemes:
        run = f"resnet8-{scheme}-s0"
        assert _records(tmp_path / "cluster" / run) == _records(tmp_path / "local" / run), run
        assert not (tmp_path / "cluster" / run / LEASE).exists()  # let go when the run ended
        assert "[sharenet study --backend ray: node " in (tmp_path / "cluster" / run / "train.log").read_text()
    again = _ray_study(spec, cluster, cwd=tmp_path)
    assert "3 already done, 0 ran, 0 failed, 0 left" in again.stdout


@pytest.mark.slow
def test_a_run_whose_node_dies_continues_on_another_from_its_checkpoint(cluster, fmnist_dir, tmp_path):
    """The raylet of the node running the run is killed (SIGKILL) after the run wrote a
    checkpoint: Ray retries the task on the other node, the run resumes there, and its weights
    equal an uninterrupted run's bit for bit; the study counts it once."""
    steps = 240  # 3 epochs: far more than any CPU trains between the first checkpoint and the kill
    reference = _spec(tmp_path / "reference.yaml", fmnist_dir, ["stage"], steps, "reference")
    sharenet_cli("study", str(reference), cwd=tmp_path, env=ONE_THREAD)
    spec = _spec(tmp_path / "lost.yaml", fmnist_dir, ["stage"], steps, "lost")
    run = tmp_path / "lost" / "resnet8-stage-s0"
    cmd = [sys.executable, "-m", "sharenet", "study", str(spec), "--backend", "ray", "--address", cluster.address]
    driver = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a guard against a hung study, not part of the verdict
    while newest_checkpoint_step(run) < 0 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, driver.stderr.read()[-2000:]
    log = (run / "train.log").read_text()
    node_id = log.split("[sharenet study --backend ray: node ")[1].split()[0]
    node = next(n for n in cluster.worker_nodes if n.node_id == node_id)
    try:
        node.kill_raylet()  # SIGKILL
        out, err = driver.communicate(timeout=600)
    finally:  # the next tests find two worker nodes again
        cluster.remove_node(node, allow_graceful=False)
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes(timeout=120)
    assert driver.returncode == 0, err[-3000:]
    assert "0 already done, 1 ran, 0 failed, 0 left" in out
    log = (run / "train.log").read_text()
    assert log.count("[sharenet study --backend ray: node ") == 2 and "resumed from" in log
    assert node_id not in log.split("[sharenet study --backend ray: node ")[2]  # another node
    ours, theirs = (
        load_file(r / "resnet8-stage-s0" / "model.safetensors") for r in (tmp_path / "lost", tmp_path / "reference")
    )
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours)
    assert json.loads((run / "summary.json").read_text())["steps"] == steps


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_on_the_driver_stops_every_run_with_a_checkpoint_and_a_rerun_finishes(
    cluster, fmnist_dir, tmp_path, sig
):
    """SIGTERM or Ctrl-C to the driver while a run trains on a node: it writes a checkpoint
    and stops (Ray starts its workers with SIGINT blocked: the trainer must take it again), the
    driver exits 143 / 130 as the local pool does, and the same command continues it to the end."""
    spec = _spec(tmp_path / "stop.yaml", fmnist_dir, ["stage"], 10**7, "stop")
    runs = [tmp_path / "stop" / "resnet8-stage-s0"]
    cmd = [sys.executable, "-m", "sharenet", "study", str(spec), "--backend", "ray", "--address", cluster.address]
    driver = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not all(newest_checkpoint_step(r) >= 0 for r in runs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None and all(newest_checkpoint_step(r) >= 0 for r in runs), "the run never trained"
    driver.send_signal(sig)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 128 + sig and f"stopped by {sig.name}" in err, err[-3000:]
    assert not any((r / "summary.json").exists() or (r / LEASE).exists() for r in runs)
    budget = max(newest_checkpoint_step(r) for r in runs) + 4
    again = _ray_study(_spec(spec, fmnist_dir, ["stage"], budget, "stop"), cluster, cwd=tmp_path)
    assert "0 already done, 1 ran, 0 failed, 0 left" in again.stdout
    for r in runs:
        assert "resumed from" in (r / "train.log").read_text()
        assert json.loads((r / "summary.json").read_text())["steps"] == budget


def _alive_nodes(cluster) -> int:
    """The cluster's live nodes, asked from a process of its own: a driver in this one would leave
    Ray's print patch (builtins.print) behind for the tests that follow."""
    ask = f"import ray; ray.init(address={cluster.address!r}); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, timeout=120)
    return int(out.stdout.split()[-1])


@pytest.mark.slow
def test_a_node_that_cannot_see_the_study_folder_is_named_before_any_run(cluster, fmnist_dir, tmp_path):
    """A third worker node in its own mount namespace, with an empty file system over the study's
    folder: the driver's probe finds it, one line names it, exit 2, and no run has started."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine cannot make a mount namespace (unshare -m needs root)")
    ray_bin = Path(sys.executable).with_name("ray")
    start = f"mount -t tmpfs tmpfs {tmp_path} && exec {ray_bin} start --address={cluster.address} --num-cpus=1 --block"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    alive = _alive_nodes(cluster)
    blind = subprocess.Popen(["unshare", "-m", "sh", "-c", start], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _alive_nodes(cluster) <= alive and time.monotonic() < deadline:
            time.sleep(1)
        assert _alive_nodes(cluster) > alive, "the node in its own mount namespace never joined the cluster"
        spec = _spec(tmp_path / "blind.yaml", fmnist_dir, ["none"], 4, "blind")
        proc = _ray_study(spec, cluster, cwd=tmp_path, check=False)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("sharenet: error: node ") and "cannot see the study folder" in line
        assert not (tmp_path / "blind" / "resnet8-none-s0").exists()
    finally:
        os.killpg(blind.pid, signal.SIGTERM)
        blind.wait(timeout=60)
