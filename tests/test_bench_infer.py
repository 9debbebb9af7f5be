"""`sharenet bench --infer` measures every runtime and reports consistent figures; speed is never asserted."""

import json
import math

import onnxruntime
import pytest
import torch

from sharenet.bench.infer import VARIANTS, format_infer
from sharenet.cli import main
from sharenet.models import create_model
from sharenet.weights import save

pytestmark = pytest.mark.slow

SMALL = ["--rounds", "2", "--calls", "5", "--infer-batch", "8", "--steps", "1", "--warmup", "1", "--json"]
FIGURES = ("p50_ms", "p99_ms", "latency_speedup", "img_per_s", "throughput_speedup", "first_call_s")


def _bench(capsys, *args) -> dict:
    assert main(["bench", "--infer", *args, *SMALL]) == 0
    return json.loads(capsys.readouterr().out)


def _assert_consistent(r: dict) -> None:
    rows = {row["variant"]: row for row in r["rows"]}
    assert list(rows) == list(VARIANTS)
    for row in rows.values():
        assert all(math.isfinite(row[k]) and row[k] > 0 for k in FIGURES), row
        assert row["p99_ms"] >= row["p50_ms"]
    eager = rows["eager fp32"]
    assert eager["latency_speedup"] == 1.0 and eager["throughput_speedup"] == 1.0
    for row in rows.values():
        assert row["latency_speedup"] == pytest.approx(eager["p50_ms"] / row["p50_ms"], rel=1e-9)
        assert row["throughput_speedup"] == pytest.approx(row["img_per_s"] / eager["img_per_s"], rel=1e-9)
    env = r["environment"]
    assert env["cpu"] and env["threads"] == torch.get_num_threads() and env["torch"] == torch.__version__
    assert env["onnxruntime"] == onnxruntime.__version__
    assert len(r["load_average"]) == 2 and r["rounds"] == 2 and r["batch"] == 8


def test_infer_bench_times_every_runtime_on_random_weights(capsys):
    r = _bench(capsys, "--model", "resnet8", "--share", "stage", "--input-size", "16")
    _assert_consistent(r)
    assert (r["model"], r["share"], r["input"], r["weights"]) == ("resnet8", "stage", [3, 16, 16], None)
    table = format_infer(r)
    assert all(name in table for name in VARIANTS) and r["environment"]["cpu"] in table and "random weights" in table


def test_infer_bench_on_a_weight_file_calibrates_on_its_training_images(capsys, fmnist_dir, tmp_path):
    model = create_model("resnet8", share="block", in_chans=1)
    preprocess = {"channels": 1, "size": 28, "resize": 28, "mean": [0.286], "std": [0.353]}
    path = save(model, tmp_path / "m.safetensors", {"dataset": "fashion-mnist", "preprocess": preprocess})
    r = _bench(capsys, "--weights", str(path), "--data-dir", str(fmnist_dir))
    _assert_consistent(r)
    assert (r["model"], r["share"], r["input"], r["weights"]) == ("resnet8", "block", [1, 28, 28], str(path))


def test_infer_bench_rejects_bad_settings(capsys, tmp_path):
    assert main(["bench", "--infer", "--calls", "0"]) == 2
    assert "--calls must be at least 1" in capsys.readouterr().err
    assert main(["bench", "--infer", "--weights", str(tmp_path), "--input-size", "16"]) == 2
    assert "--input-size applies without --weights" in capsys.readouterr().err
