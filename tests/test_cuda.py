"""The device-dependent paths on a CUDA GPU: ties after `.to("cuda")`, bit-exact train and resume,
AMP (bf16, and fp16 with its GradScaler), BatchNorm without the CPU kernel, export of a run trained
on the GPU, and two NCCL ranks where two GPUs are present.

Every test here carries the `cuda` marker: on a machine without CUDA, conftest.py skips them with
the reason. `pytest -m cuda` runs exactly these (the README's GPU command, with the GPU benchmark).
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from sharenet.engine.checkpoint import load_checkpoint
from sharenet.engine.config import Config, apply
from sharenet.engine.fit import build_trainer
from sharenet.models import create_model

from .helpers import assert_tied
from .test_distributed import torchrun
from .test_resume import _kill_after, _start
from .test_ties import CASES
from .test_train_cli import sharenet_cli

pytestmark = pytest.mark.cuda

GPU = ["--device", "cuda", "--set", "run.deterministic=true"]


def _train(fmnist_dir, out, *extra, max_steps=40):
    return _start(fmnist_dir, out, *GPU, *extra, max_steps=max_steps)


@pytest.mark.parametrize(("name", "share"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
@torch.no_grad()
def test_ties_survive_the_move_to_cuda_and_compute_what_the_cpu_does(name, share):
    model = create_model(name, share=share).eval()
    size = 64 if model.arch.family == "imagenet" else 16
    x = torch.randn(2, 3, size, size)
    want = model(x)
    moved = model.to("cuda")
    assert assert_tied(moved) > 0
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 against fp32
    got = moved(x.cuda()).cpu()
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()


@pytest.mark.slow
def test_killed_and_resumed_cuda_run_equals_uninterrupted(fmnist_dir, tmp_path):
    """Deterministic algorithms on: the GPU run resumes bit for bit (weights and test top-1)."""
    whole = _train(fmnist_dir, tmp_path / "whole")
    assert whole.wait() == 0, whole.stderr.read()[-2000:]
    out = tmp_path / "killed"
    _kill_after(_train(fmnist_dir, out, max_steps=10**6), out, 14)
    final = _train(fmnist_dir, out, "--resume", "auto")
    assert final.wait() == 0 and "resumed from" in final.stderr.read()
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (tmp_path / "whole", out)]
    assert summaries[0]["test_top1"] == summaries[1]["test_top1"]
    assert json.loads((out / "config.json").read_text())["env_device"].startswith("cuda")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_trains_and_fp16_checkpoints_its_loss_scale(fmnist_dir, tmp_path, precision):
    out = tmp_path / precision
    proc = _train(fmnist_dir, out, "--set", f"run.precision={precision}")
    assert proc.wait() == 0, proc.stderr.read()[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (
        json.loads((out / "config.json").read_text())["env_dtype"] == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    )
    assert summary["test_top1"] > 0.5  # 40 steps of 64 images: well above chance (0.1)
    state = load_checkpoint(out)
    if precision == "fp16":
        assert state["scaler"]["scale"] > 0 and state["rng_cuda"] is not None
    else:
        assert state["scaler"] is None


def test_batchnorm_falls_back_from_the_cpu_kernel_on_cuda():
    """The fused BatchNorm(+add)+ReLU kernel is CPU code: on the GPU the plain layers train."""
    cfg = apply(Config(), {"run.device": "cuda", "run.compile": "off"})
    model = create_model("resnet20", share="stage").cuda()
    trainer = build_trainer(cfg, model, torch.device("cuda"), steps_per_epoch=10)
    assert not trainer.fast.fused_batchnorm
    x = torch.randn(8, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,), device="cuda")
    shared = model.get_parameter("stages.0.shared.weight")
    before = shared.detach().clone()
    trainer.step(x, y, 0)
    assert not torch.equal(before, shared)


@pytest.mark.slow
def test_a_run_trained_on_cuda_exports_and_checks(fmnist_dir, tmp_path):
    out = tmp_path / "run"
    proc = _train(fmnist_dir, out, max_steps=20)
    assert proc.wait() == 0, proc.stderr.read()[-2000:]
    onnx = tmp_path / "model.onnx"
    sharenet_cli("export", str(out), "--out", str(onnx), "--check", "--data-dir", str(fmnist_dir))
    assert onnx.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs for two NCCL ranks")
def test_two_nccl_ranks_train_in_step(fmnist_dir, tmp_path):
    out = tmp_path / "ddp"
    torchrun(2, "--data-dir", str(fmnist_dir), "--out", str(out), *GPU, "--max-steps", "12")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(set(summary["rank_param_sha256"])) == 1


def test_bench_times_the_gpu_and_names_it():
    proc = sharenet_cli("bench", "--device", "cuda", "--model", "resnet20", "--steps", "2", "--rounds", "3")
    header = proc.stdout.splitlines()[1]
    assert torch.cuda.get_device_name() in header and "MiB allocated" in header
