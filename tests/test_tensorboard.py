"""run.tensorboard: real short runs whose RUN/tb/, read back with TensorBoard's own reader, holds
metrics.jsonl's and summary.json's numbers, each step once, also across a resume."""

import importlib.util
import json
import sys

import pytest

from sharenet.cli import main

from .test_train_cli import sharenet_cli

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="the tensorboard extra is not installed (pip install 'sharenet[tensorboard]')",
)
TENSORBOARD = ("--set", "run.tensorboard=true")


def _train(fmnist_dir, out, *extra, max_steps: int):
    args = ["--data-dir", str(fmnist_dir), "--out", str(out), "--batch-size", "64", "--no-progress"]
    every = ["--checkpoint-every", "5", "--set", "run.log_every=5", "--max-steps", str(max_steps)]
    return sharenet_cli("train", *args, *every, *extra)


def _scalars(run) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of RUN/tb/ as TensorBoard shows it: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})  # 0: keep every point
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def _records(run) -> dict[str, list[tuple[int, float]]]:
    """The numbers of metrics.jsonl (at each row's step) and summary.json (at the last step), as tags."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    out = {}
    for row in [*rows, {**summary, "kind": "summary", "step": summary["steps"]}]:
        for name, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
                out.setdefault(f"{row['kind']}/{name}", []).append((row["step"], value))
    return out


def _assert_scalars_equal_records(run) -> None:
    scalars, records = _scalars(run), _records(run)
    assert sorted(scalars) == sorted(records)
    for tag, points in records.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in points], tag  # every step, once
        for (_, got), (step, want) in zip(scalars[tag], points, strict=True):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-12), f"{tag} at step {step}"  # stored as float32


@needs_tensorboard
@pytest.mark.slow
def test_scalars_equal_the_records_and_a_resume_shows_each_step_once(fmnist_dir, tmp_path):
    out = tmp_path / "r"
    _train(fmnist_dir, out, *TENSORBOARD, max_steps=15)
    _assert_scalars_equal_records(out)
    tags = set(_scalars(out))
    assert {"train/loss", "train/acc", "train/lr", "train/img_per_s", "epoch/test_top1"} <= tags
    assert {"checkpoint/seconds", "summary/test_top1", "summary/test_top1_tta"} <= tags
    assert [s for s, _ in _scalars(out)["train/loss"]] == [5, 10, 15]

    for name in ("summary.json", "ckpt-00000015.pt", "ckpt-00000015.json"):  # as if killed after step 15's rows
        (out / name).unlink()
    resumed = _train(fmnist_dir, out, *TENSORBOARD, "--resume", "auto", max_steps=20)
    assert "at step 10" in resumed.stderr  # metrics.jsonl dropped the rows after it; tb/ must drop them too
    _assert_scalars_equal_records(out)
    assert [s for s, _ in _scalars(out)["train/loss"]] == [5, 10, 15, 20]


@needs_tensorboard
@pytest.mark.slow
def test_off_by_default_and_may_be_turned_on_when_resuming(fmnist_dir, tmp_path):
    out = tmp_path / "r"
    _train(fmnist_dir, out, max_steps=10)
    assert not (out / "tb").exists()
    (out / "summary.json").unlink()
    resumed = _train(fmnist_dir, out, *TENSORBOARD, "--resume", "auto", max_steps=15)
    assert "tensorboard" not in resumed.stderr  # a local key: its change is not reported
    _assert_scalars_equal_records(out)  # the rows before the resume included
    assert [s for s, _ in _scalars(out)["train/loss"]] == [5, 10, 15]


def test_without_tensorboard_the_run_is_refused_before_it_starts(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    out = tmp_path / "r"
    args = ["train", "--data-dir", str(tmp_path / "no-data"), "--out", str(out), *TENSORBOARD]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "run.tensorboard=true" in err and "pip install 'sharenet[tensorboard]'" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
