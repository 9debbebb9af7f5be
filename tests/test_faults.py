"""Real faults, real answers: signals to a real process, a real full filesystem, unwritable files.

Each test here is a row of the fault table (docs/faults.md) (the last test checks that every row names
a test that exists).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sharenet.engine.checkpoint import load_checkpoint

from .test_resume import UNBOUNDED, _start
from .test_train_cli import sharenet_cli

pytestmark = pytest.mark.slow
CODES = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGUSR1: 138}


@pytest.fixture(scope="module")
def whole(fmnist_dir, tmp_path_factory):
    """The uninterrupted 70-step run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("whole") / "r"
    proc = _start(fmnist_dir, out)
    assert proc.wait() == 0, proc.stderr.read()[-2000:]
    return out


def _same_weights(a: Path, b: Path) -> None:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _logged_step(out: Path) -> int:
    try:
        rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if r.strip()]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1
    return max((r["step"] for r in rows), default=-1)


def _signal_at(proc, out: Path, step: int, sig: int) -> None:
    """Send `sig` once the run has logged `step` (a point the test knows it reached, not a sleep)."""
    deadline = time.monotonic() + 180
    while _logged_step(out) < step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal: " + proc.stderr.read()[-2000:]
    proc.send_signal(sig)


def test_sigterm_stops_after_a_step_with_a_checkpoint_and_resume_ends_identical(whole, fmnist_dir, tmp_path):
    out = tmp_path / "r"
    proc = _start(fmnist_dir, out, "--set", "run.log_every=1", max_steps=UNBOUNDED)
    _signal_at(proc, out, 10, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    last = proc.stderr.read().strip().splitlines()[-1]
    found = re.fullmatch(
        r"sharenet: stopped by SIGTERM at step (\d+); checkpoint (\S+); continue with "
        r"sharenet train --resume auto --out (\S+)",
        last,
    )
    assert found, last
    step = int(found[1])
    assert step >= 10 and load_checkpoint(found[2])["step"] == step and found[3] == str(out)
    final = _start(fmnist_dir, out, "--resume", "auto")
    assert final.wait() == 0 and f"at step {step}" in final.stderr.read()
    _same_weights(whole, out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR1], ids=["SIGINT", "SIGUSR1"])
def test_sigint_and_sigusr1_stop_with_a_checkpoint_and_their_exit_code(sig, fmnist_dir, tmp_path):
    out = tmp_path / "r"
    proc = _start(fmnist_dir, out, "--set", "run.log_every=1", max_steps=UNBOUNDED)
    _signal_at(proc, out, 3, sig)
    assert proc.wait(timeout=120) == CODES[sig]
    err = proc.stderr.read()
    assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err
    step = int(re.search(r"at step (\d+)", err)[1])
    assert load_checkpoint(out / f"ckpt-{step:08d}.pt")["step"] == step


def test_a_second_signal_aborts_at_once(fmnist_dir, tmp_path):
    """Steps of 1,024 images take long enough that the second signal lands while the first waits."""
    out = tmp_path / "r"
    cmd = [
        sys.executable,
        "-m",
        "sharenet",
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(out),
        "--batch-size",
        "1024",
        "--no-progress",
        "--set",
        "run.log_every=1",
        "--set",
        "run.compile=off",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    heard = threading.Event()

    def watch():
        for line in proc.stderr:
            if "received: stopping after this step" in line:
                heard.set()

    threading.Thread(target=watch, daemon=True).start()
    _signal_at(proc, out, 1, signal.SIGTERM)
    assert heard.wait(60)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == -signal.SIGINT  # killed by the second signal, no checkpoint written for it
    assert not list(out.glob(".*tmp*"))


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB filesystem (tmpfs), as root; skipped with the reason where mounting is refused."""
    mount = tmp_path / "disk"
    mount.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip() or proc.returncode}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_one_line_checkpoints_kept_and_resume_ends_identical(whole, fmnist_dir, small_disk):
    out = small_disk / "r"
    proc = _start(fmnist_dir, out, "--set", "run.keep_checkpoints=3")  # three 1.4 MB checkpoints cannot fit
    assert proc.wait() == 1
    lines = proc.stderr.read().strip().splitlines()
    last = [line for line in lines if "warn" not in line.lower()][-1]
    assert last.startswith("sharenet: error: cannot ") and "no space left" in last.lower(), lines[-5:]
    assert str(out) in last and not any("Traceback" in line for line in lines)
    kept = sorted(out.glob("ckpt-*.pt"))
    assert kept and all(load_checkpoint(p)["step"] == int(p.stem[5:]) for p in kept)  # checksums verify
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
    assert all(json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines())  # no half-written row
    subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)  # space freed
    final = _start(fmnist_dir, out, "--resume", "auto", "--set", "run.keep_checkpoints=3")
    assert final.wait() == 0, final.stderr.read()[-2000:]
    _same_weights(whole, out)


def test_final_weights_that_cannot_be_written_are_written_by_resuming(whole, fmnist_dir, tmp_path):
    out = tmp_path / "r"
    (out / "model.safetensors").mkdir(parents=True)  # a real unwritable target: a directory in the way
    proc = _start(fmnist_dir, out)
    assert proc.wait() == 1
    last = proc.stderr.read().strip().splitlines()[-1]
    assert "cannot write the final weights" in last and "--resume auto" in last, last
    (out / "model.safetensors").rmdir()
    final = _start(fmnist_dir, out, "--resume", "auto")
    assert final.wait() == 0
    _same_weights(whole, out)


def test_curves_that_cannot_be_written_lose_nothing(fmnist_dir, tmp_path):
    out = tmp_path / "r"
    (out / "curves.png").mkdir(parents=True)
    proc = sharenet_cli(
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(out),
        "--max-steps",
        "3",
        "--batch-size",
        "64",
        "--no-progress",
        "--set",
        "run.compile=off",
    )
    assert "warning: could not write" in proc.stderr and "weights and summary kept" in proc.stderr
    assert (out / "model.safetensors").is_file() and (out / "summary.json").is_file()


def test_time_based_checkpoints_are_written_and_their_cost_logged(fmnist_dir, tmp_path):
    out = tmp_path / "r"
    sharenet_cli(
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(out),
        "--max-steps",
        "8",
        "--batch-size",
        "64",
        "--no-progress",
        "--set",
        "run.compile=off",
        "--set",
        "run.checkpoint_minutes=0.0001",
    )
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    saved = [r for r in rows if r["kind"] == "checkpoint"]
    assert [r["step"] for r in saved] == list(range(1, 9))  # every step: 6 ms apart is "minutes" here
    assert all(r["seconds"] > 0 and r["bytes"] > 0 for r in saved)


def test_non_finite_setting_is_refused_before_any_work(tmp_path):
    proc = sharenet_cli("train", "--out", str(tmp_path / "r"), "--set", "optim.lr=nan", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "sharenet: error: optim.lr=nan is invalid: needs a finite number >= 0"
    )
    assert not (tmp_path / "r").exists()


def test_study_passes_a_signal_on_and_its_runs_lose_no_steps(fmnist_dir, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: s\nrecipe: fashion-mnist\nmodels: [resnet8]\nschemes: [stage]\nseeds: [0]\nout: {tmp_path / 'runs'}\n"
        f"base: {{data: {{data_dir: {fmnist_dir}}}, optim: {{batch_size: 64, epochs: 2}}, "
        "run: {log_every: 1, compile: 'off'}}\n"
    )
    run = tmp_path / "runs" / "resnet8-stage-s0"
    study = subprocess.Popen(
        [sys.executable, "-m", "sharenet", "study", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _signal_at(study, run, 5, signal.SIGTERM)
    assert study.wait(timeout=120) == 143
    err = study.stderr.read()
    step = int(re.search(r"stopped by SIGTERM at step (\d+)", err)[1])
    assert "run the study again" in err and load_checkpoint(run / f"ckpt-{step:08d}.pt")["step"] == step
    again = subprocess.run([sys.executable, "-m", "sharenet", "study", str(spec)], capture_output=True, text=True)
    assert again.returncode == 0 and f"resumed from {run / f'ckpt-{step:08d}.pt'} at step {step}" in again.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 2 * (2560 // 64)


def test_every_fault_table_row_is_a_test():
    page = (Path(__file__).parent.parent / "docs" / "faults.md").read_text()
    table = page[page.index("<!-- fault table -->") : page.index("<!-- end fault table -->")]
    named = re.findall(r"`(tests/\w+\.py)::(\w+)`", table)
    assert len(named) >= 14
    for path, name in named:
        text = (Path(__file__).parent.parent / path).read_text()
        assert f"def {name}(" in text, f"{path}::{name} is named in the fault table but does not exist"


def _torchrun(out: Path, fmnist_dir, *extra) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "sharenet",
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(out),
        "--batch-size",
        "64",
        "--no-progress",
        "--set",
        "run.log_every=1",
        "--set",
        "run.compile=off",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigterm_to_torchrun_stops_every_rank_after_the_same_step(fmnist_dir, tmp_path):
    """torchrun forwards SIGTERM to each rank; they agree on the step, rank 0 writes its checkpoint."""
    out = tmp_path / "r"
    proc = _torchrun(out, fmnist_dir)
    _signal_at(proc, out, 4, signal.SIGTERM)
    proc.wait(timeout=120)  # torchrun's own exit code and report follow its SignalException
    err = proc.stderr.read()
    stops = re.findall(r"sharenet: stopped by SIGTERM at step (\d+); checkpoint", err)
    assert len(stops) == 2 and stops[0] == stops[1], err[-3000:]  # both ranks, one step
    step = int(stops[0])
    assert load_checkpoint(out / f"ckpt-{step:08d}.pt")["world_size"] == 2


def test_a_rank_killed_under_torchrun_ends_the_run_and_the_checkpoints_resume(fmnist_dir, tmp_path):
    out = tmp_path / "r"
    proc = _torchrun(out, fmnist_dir, "--checkpoint-every", "2", "--max-steps", str(UNBOUNDED))
    _signal_at(proc, out, 5, 0)  # signal 0: only waits for step 5
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(int(ranks[-1]), signal.SIGKILL)  # one rank dies for real
    assert proc.wait(timeout=120) != 0
    assert "SIGKILL" in proc.stderr.read() and not (out / "summary.json").exists()
    kept = sorted(out.glob("ckpt-*.pt"))
    assert kept and all(load_checkpoint(p)["step"] == int(p.stem[5:]) for p in kept)
    resumed = sharenet_cli(
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(out),
        "--batch-size",
        "64",
        "--max-steps",
        "12",
        "--resume",
        "auto",
        "--no-progress",
    )
    assert "resumed from" in resumed.stderr and json.loads((out / "summary.json").read_text())["steps"] == 12
