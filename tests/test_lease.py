"""One trainer per run directory (lease.py): a second trainer refused while the holder lives, a
dead holder's lease taken over, and a lease of another host judged by its heartbeat."""

import json
import subprocess
import sys
import time

import pytest

from sharenet.lease import LEASE, Lease, LeaseHeld

from .helpers import newest_checkpoint_step
from .test_train_cli import sharenet_cli


def test_a_second_trainer_on_a_leased_run_folder_is_refused(fmnist_dir, tmp_path):
    """A live trainer holds its run folder: a second `sharenet train` there is one line and exit 2,
    and changes nothing; a holder killed with SIGKILL leaves a lease the next trainer takes over."""
    out = tmp_path / "run"
    base = ["train", "--model", "resnet8", "--data-dir", str(fmnist_dir), "--out", str(out), "--no-progress"]
    base += ["--batch-size", "32", "--set", "run.compile=off", "--set", "run.checkpoint_every=2"]
    first = subprocess.Popen(
        [sys.executable, "-m", "sharenet", *base, "--max-steps", "100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while newest_checkpoint_step(out) < 0 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.stderr.read()[-2000:]
    assert json.loads((out / LEASE).read_text())["pid"] == first.pid
    second = sharenet_cli(*base, "--resume", "auto", "--max-steps", "4", check=False)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert "is being written by another trainer" in second.stderr and f"pid {first.pid}" in second.stderr
    first.kill()  # SIGKILL: no checkpoint at the end, no release
    first.wait()
    assert json.loads((out / LEASE).read_text())["pid"] == first.pid
    step = newest_checkpoint_step(out)
    third = sharenet_cli(*base, "--resume", "auto", "--max-steps", str(step + 2))
    assert "resumed from" in third.stderr + third.stdout
    assert not (out / LEASE).exists()


def test_a_lease_from_another_host_is_live_until_its_heartbeat_goes_stale(tmp_path):
    """Pids of other hosts cannot be checked: their heartbeat says whether the holder lives."""
    from sharenet import lease

    record = {"host": "elsewhere", "pid": 1, "token": "theirs"}
    (tmp_path / LEASE).write_text(json.dumps({**record, "heartbeat": time.time()}))
    with pytest.raises(LeaseHeld, match="elsewhere pid 1"):
        Lease(tmp_path).acquire()
    (tmp_path / LEASE).write_text(json.dumps({**record, "heartbeat": time.time() - lease.STALE_S - 1}))
    held = Lease(tmp_path).acquire()  # taken over
    assert json.loads((tmp_path / LEASE).read_text())["token"] == held.token
    held.release()
    assert not (tmp_path / LEASE).exists()
