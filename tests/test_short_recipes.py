"""What short recipes need: an EMA that warms up, a held-out validation split, flip TTA reported apart."""

import json

import pytest
import torch

from sharenet.engine.ema import warmed_decay
from sharenet.models import create_model, zero_init_residual

from .test_train_cli import sharenet_cli


def test_ema_decay_warms_up_then_holds():
    assert warmed_decay(0.999, 0) == 0.0  # the first average is the live weights
    assert warmed_decay(0.999, 100) == pytest.approx(1 - 101 ** (-2 / 3))  # ~0.954: forgets the start fast
    assert warmed_decay(0.999, 10**6) == 0.999
    assert warmed_decay(0.999, 0, warmup=False) == 0.999


@pytest.fixture(scope="module")
def ema_run(fmnist_dir, tmp_path_factory):
    """160 steps with decay 0.999 (without a warm-up, 85 % of the average would be the initial weights)."""
    out = tmp_path_factory.mktemp("ema") / "r"
    sharenet_cli(
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--model",
        "resnet8",
        "--epochs",
        "5",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "optim.ema_decay=0.999",
        "--set",
        "data.val_split=560",
        "--set",
        "run.tta=true",
        "--set",
        "run.compile=off",
    )
    return out


@pytest.mark.slow
def test_short_run_ema_scores_with_its_live_weights_and_both_are_reported(ema_run):
    s = json.loads((ema_run / "summary.json").read_text())
    assert s["weights"] == "ema" and s["ema_test_top1"] == s["test_top1"]
    assert s["ema_test_top1"] >= s["live_test_top1"] - 0.05 and s["ema_test_top1"] > 0.6, s
    assert s["ema_below_live"] == (s["ema_test_top1"] < s["live_test_top1"])


@pytest.mark.slow
def test_validation_split_is_held_out_and_reported_every_epoch(ema_run):
    s = json.loads((ema_run / "summary.json").read_text())
    assert s["steps"] == 5 * ((2560 - 560) // 64)  # trained on the first 2,000 images only
    epochs = [json.loads(line) for line in (ema_run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["kind"] == "epoch"]
    assert len(epochs) == 5 and all(0 < r["val_top1"] <= 1 and r["val_loss"] > 0 for r in epochs)
    assert 0 < s["val_top1"] <= 1 and "val_top1_tta" in s


@pytest.mark.slow
def test_tta_is_reported_beside_the_plain_top1_and_eval_repeats_it(ema_run, fmnist_dir):
    s = json.loads((ema_run / "summary.json").read_text())
    assert s["tta_forward_passes"] == 2 and 0 < s["test_top1_tta"] <= 1 and s["test_top1_tta"] != s["test_loss_tta"]
    proc = sharenet_cli("eval", str(ema_run), "--data-dir", str(fmnist_dir), "--tta", "--json")
    report = json.loads(proc.stdout)
    assert report["top1"] == s["test_top1"] and report["top1_tta"] == s["test_top1_tta"]


def test_validation_split_must_leave_training_images(fmnist_dir, tmp_path):
    proc = sharenet_cli(
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(tmp_path / "r"),
        "--max-steps",
        "1",
        "--set",
        "data.val_split=2560",
        check=False,
    )
    assert proc.returncode == 2 and "leaves no training images" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("name", "share", "blocks"), [("resnet20", "stage", 9), ("resnet50", "stage", 16)])
def test_zero_init_residual_starts_every_block_as_the_identity(name, share, blocks):
    """Each block's output is its (ReLU'd) shortcut: the shared kernels are untouched, the scales are zero."""
    torch.manual_seed(0)
    model = create_model(name, share=share).eval()
    kernels = {k: v.clone() for k, v in model.state_dict().items() if "conv" in k or "shared" in k}
    assert zero_init_residual(model) == blocks
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in kernels.items())
    seen = []
    hooks = [
        b.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out)))
        for stage in model.stages
        for b in stage.blocks
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
        for block, x, out in seen:
            torch.testing.assert_close(out, torch.relu(block.shortcut(x)))
    assert len(seen) == blocks
    for h in hooks:
        h.remove()


def test_zero_init_residual_is_refused_for_pre_activation_blocks(fmnist_dir, tmp_path):
    assert zero_init_residual(create_model("wrn16_4")) == 0
    proc = sharenet_cli(
        "train",
        "--data-dir",
        str(fmnist_dir),
        "--out",
        str(tmp_path / "r"),
        "--model",
        "wrn16_4",
        "--set",
        "model.zero_init_residual=true",
        check=False,
    )
    assert proc.returncode == 2 and "pre-activation blocks end in a conv" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
