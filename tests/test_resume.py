"""Reliability: a run killed with SIGKILL and resumed ends bitwise identical; bad checkpoints are named."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from sharenet.engine.checkpoint import CheckpointError, find_latest, load_checkpoint

from .helpers import newest_checkpoint_step
from .test_train_cli import sharenet_cli

ARGS = ["--batch-size", "64", "--checkpoint-every", "7", "--no-progress"]
UNBOUNDED = 10**6  # a run to be killed trains on (to the recipe's last epoch) until the test kills it


def _start(fmnist_dir, out, *extra, max_steps: int = 70):
    cmd = [
        sys.executable,
        "-m",
        "sharenet",
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(out),
        *ARGS,
        "--max-steps",
        str(max_steps),
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(proc, out, step: int) -> None:
    deadline = time.monotonic() + 120
    while newest_checkpoint_step(out) < step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_killed_twice_and_resumed_equals_uninterrupted(fmnist_dir, tmp_path):
    whole = _start(fmnist_dir, tmp_path / "whole")
    assert whole.wait() == 0, whole.stderr.read()[-2000:]

    out = tmp_path / "killed"
    _kill_after(_start(fmnist_dir, out, max_steps=UNBOUNDED), out, 14)  # mid-epoch 1 (40 steps per epoch)
    resumed = _start(fmnist_dir, out, "--resume", "auto", max_steps=UNBOUNDED)
    _kill_after(resumed, out, 42)  # after the epoch boundary
    final = _start(fmnist_dir, out, "--resume", "auto")
    assert final.wait() == 0
    assert "resumed from" in final.stderr.read()

    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = json.loads((tmp_path / "whole" / "summary.json").read_text())
    sb = json.loads((out / "summary.json").read_text())
    assert sa["test_top1"] == sb["test_top1"] and sb["steps"] == 70
    epochs = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in epochs if r["kind"] == "epoch"] == [40, 70]  # no duplicates after resuming


@pytest.fixture(scope="module")
def finished_run(fmnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "r"
    sharenet_cli(
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(out),
        "--max-steps",
        "6",
        "--batch-size",
        "64",
        "--checkpoint-every",
        "2",
        "--no-progress",
        "--set",
        "run.keep_checkpoints=3",
    )
    return out


def _copy(run, dst):
    dst.mkdir()
    for f in run.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.slow
def test_bad_newest_checkpoint_is_skipped_with_a_warning(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path / "r")
    newest = sorted(run.glob("ckpt-*.pt"))[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        path, state = find_latest(run)
    assert path != newest and state["step"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "empty", "foreign", "no-record"])
def test_damaged_checkpoints_give_one_named_error(finished_run, tmp_path, damage):
    run = _copy(finished_run, tmp_path / "r")
    ckpt = sorted(run.glob("ckpt-*.pt"))[-1]
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    else:
        ckpt.with_suffix(".json").unlink()
    proc = sharenet_cli("train", "--data-dir", "/x", "--resume", str(ckpt), "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"checkpoint {ckpt}" in proc.stderr
    if damage == "foreign":  # a foreign file with a valid record: caught by content, not checksum
        record = json.loads(ckpt.with_suffix(".json").read_text())
        assert record["sha256"] != "" and "checksum mismatch" in proc.stderr


def test_unwritable_output_directory_is_refused_before_work(tmp_path, fmnist_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = sharenet_cli("train", "--data-dir", str(fmnist_dir), "--out", str(blocker / "run"), check=False)
    assert proc.returncode == 2 and "is not writable" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_resume_after_the_fix_works(fmnist_dir, tmp_path):
    out = tmp_path / "r"
    args = [
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(out),
        "--batch-size",
        "64",
        "--no-progress",
        "--set",
        "optim.warmup_steps=0",
    ]
    sharenet_cli("train", *args, "--max-steps", "4", "--lr", "0.05")  # a good checkpoint at step 4
    (out / "summary.json").unlink()
    proc = sharenet_cli("train", *args, "--max-steps", "20", "--lr", "1e6", "--resume", "auto", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "non-finite" in proc.stderr and "the step was not applied" in proc.stderr
    assert [p.name for p in out.glob("ckpt-*.pt")] == ["ckpt-00000004.pt"]  # the last good checkpoint is kept
    fixed = sharenet_cli("train", *args, "--max-steps", "20", "--lr", "0.05", "--resume", "auto")
    assert "resumed from" in fixed.stderr and "at step 4" in fixed.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 20
