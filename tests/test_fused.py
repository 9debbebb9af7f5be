"""The fused BatchNorm(+residual)+ReLU CPU kernel equals BatchNorm's training-mode result.

Gradients are compared against autograd through F.batch_norm in float32 with the kernel's own
ReLU mask (y > 0): an element within rounding of zero may fall on either side of the ReLU in two
correct implementations, and that choice is not what these tests are about.
"""

import copy
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sharenet import create_model
from sharenet.engine.syncbn import CrossRankBatchNorm2d
from sharenet.models import BatchNormAct2d, fused, use_fused_kernel

CL = torch.channels_last


@pytest.fixture(scope="module", autouse=True)
def _kernel():
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        pytest.skip("the fused kernel is built on first use and needs a C++ compiler (g++): none on PATH")
    assert fused.load(), "the fused kernel did not build (a C++ compiler and ninja are needed)"


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=CL)


def _reference(x, bn, residual, relu, mask):
    """Autograd through F.batch_norm in float32, ReLU replaced by the kernel's mask."""
    xr = x.detach().float().requires_grad_()
    rr = residual.detach().float().requires_grad_() if residual is not None else None
    w = bn.weight.detach().clone().requires_grad_()
    b = bn.bias.detach().clone().requires_grad_()
    out = F.batch_norm(xr, None, None, w, b, True, 0.0, bn.eps)
    if rr is not None:
        out = out + rr
    if relu:
        out = out * mask
    return out, xr, rr, w, b


@pytest.mark.parametrize("channels", [16, 24, 64])
@pytest.mark.parametrize(("with_residual", "relu"), [(False, True), (True, True), (False, False)])
def test_float32_forward_backward_and_running_stats(channels, with_residual, relu):
    x = _cl(torch.randn(6, channels, 9, 7) * 2 + 3).requires_grad_()
    residual = _cl(torch.randn(6, channels, 9, 7)).requires_grad_() if with_residual else None
    bn = nn.BatchNorm2d(channels)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.normal_(bn.bias)
    plain = copy.deepcopy(bn)
    y = fused.bn_act(bn, x, residual, relu)
    assert y.is_contiguous(memory_format=CL) and y.dtype == torch.float32
    ref, xr, rr, w, b = _reference(x, bn, residual, relu, (y > 0).float())
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(y)
    y.backward(dy)
    ref.backward(dy)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad, w.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad, b.grad, rtol=1e-4, atol=1e-5)
    if with_residual:
        torch.testing.assert_close(residual.grad, rr.grad, rtol=1e-4, atol=1e-5)
    plain(x.detach())  # nn.BatchNorm2d's own running-stat update on the same batch
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(plain, name), rtol=1e-5, atol=1e-6)


def test_variance_stays_exact_when_the_mean_dwarfs_the_spread():
    x = _cl(torch.randn(8, 16, 8, 8, dtype=torch.float64) * 0.01 + 1000).float()
    bn = nn.BatchNorm2d(16, momentum=None)  # cumulative average: running_var is the batch's variance
    fused.bn_act(bn, x, None, False)
    want = x.double().var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_var.double(), want, rtol=2e-3, atol=0)


def test_bfloat16_within_bfloat16_rounding():
    x = _cl(torch.randn(8, 32, 16, 16)).bfloat16()
    residual = _cl(torch.randn(8, 32, 16, 16)).bfloat16()
    bn = nn.BatchNorm2d(32)
    y = fused.bn_act(bn, x, residual, True)
    assert y.dtype == torch.bfloat16
    ref = F.relu(F.batch_norm(x.float(), None, None, bn.weight, bn.bias, True, 0.0, bn.eps) + residual.float())
    assert (y.float() - ref).abs().max() <= 2**-7 * ref.abs().max()


def _switched(layer: nn.Module) -> nn.Module:
    use_fused_kernel(layer)
    return layer


def test_the_layer_is_batchnorm_with_its_keys_and_shows_its_kernel():
    model = create_model("resnet8", share="stage")
    plain_keys = set(nn.BatchNorm2d(16).state_dict())
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert layers and all(isinstance(m, BatchNormAct2d) for m in layers)
    assert set(model.stem.bn.state_dict()) == plain_keys
    assert "kernel=plain" in str(model) and "kernel=fused" not in str(model)
    assert use_fused_kernel(model) == len(layers)
    assert "kernel=fused" in str(model) and "kernel=plain" not in str(model)
    assert use_fused_kernel(model, on=False) == len(layers) and "kernel=fused" not in str(model)


def test_plain_path_where_the_kernel_does_not_apply():
    x = torch.randn(4, 8, 5, 5)
    for bn, inp in (
        (_switched(BatchNormAct2d(8)), x),  # NCHW: the plain baseline's layout
        (_switched(BatchNormAct2d(8)).eval(), _cl(x)),  # eval mode
        (_switched(CrossRankBatchNorm2d(8, act=True)), _cl(x)),  # a subclass keeps its own statistics
        (_switched(BatchNormAct2d(8, affine=False)), _cl(x)),
    ):
        fell_back = copy.deepcopy(bn)
        fell_back.kernel = "plain"
        assert torch.equal(bn(inp), fell_back(inp))
    assert [m.kernel for m in (_switched(CrossRankBatchNorm2d(8)), _switched(BatchNormAct2d(8, affine=False)))] == [
        "plain",
        "plain",
    ]
    mixed = _switched(BatchNormAct2d(8))(_cl(x).bfloat16(), _cl(x))  # dtypes differ: plain
    assert mixed.dtype == torch.float32
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        _switched(BatchNormAct2d(8))(_cl(torch.randn(1, 8, 1, 1)))


def test_resnet_training_step_matches_plain_batchnorm():
    model = create_model("resnet20", share="stage").to(memory_format=CL)
    x, y = _cl(torch.randn(16, 3, 32, 32)), torch.randint(0, 10, (16,))

    def step(m):
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in m.named_parameters()}, dict(m.named_buffers())

    fast = copy.deepcopy(model)
    assert use_fused_kernel(fast) > 0
    fast = step(fast)
    plain = step(copy.deepcopy(model))
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-6)
    for name, grad in plain[1].items():  # a handful of ReLU inputs within rounding of 0 may flip
        assert (fast[1][name] - grad).norm() <= 2e-2 * grad.norm() + 1e-6, name
    for name, buf in plain[2].items():
        torch.testing.assert_close(fast[2][name], buf, rtol=1e-4, atol=1e-5)


def test_compiled_model_uses_the_kernel_and_agrees_with_eager():
    model = create_model("resnet8", share="block").to(memory_format=CL)
    use_fused_kernel(model)
    x = _cl(torch.randn(8, 3, 32, 32))
    eager = copy.deepcopy(model)(x)
    compiled = torch.compile(copy.deepcopy(model))
    with torch.profiler.profile() as prof:
        out = compiled(x)
    assert any(e.name.startswith("sharenet_cpu::bn_act_fwd") for e in prof.events())
    scale = float(eager.detach().abs().max())
    torch.testing.assert_close(out, eager, rtol=0, atol=2**10 * torch.finfo(torch.float32).eps * scale)


def test_switched_off_by_environment():
    import os
    import subprocess
    import sys

    code = "from sharenet.models import fused; import sys; sys.exit(0 if fused.load() is False else 1)"
    env = {**os.environ, "SHARENET_FUSED_BN": "0"}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_a_build_killed_midway_leaves_no_lock_that_hangs_the_next_process(tmp_path):
    """torch's build lock is a file only its creator deletes: copy the built kernel to a fresh cache,
    leave the lock a SIGKILLed build would leave beside it, and the next process still loads it."""
    import os
    import subprocess
    import sys

    from torch.utils import cpp_extension

    built = Path(cpp_extension._get_build_directory(fused.extension_name(), verbose=False))
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    code = "from sharenet.models import fused; import sys; sys.exit(0 if fused.load() else 1)"
    copy_to = tmp_path / fused.extension_name()  # where torch builds it under TORCH_EXTENSIONS_DIR
    shutil.copytree(built, copy_to, ignore=shutil.ignore_patterns("lock", "sharenet.flock"))
    (copy_to / "lock").touch()
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=240)
    assert proc.returncode == 0 and not (copy_to / "lock").exists()


@pytest.mark.parametrize(
    ("name", "share", "size"),
    [
        ("resnet18", "stage", 64),
        ("resnet50", "stage", 64),
        ("preact_resnet164", "stage", 16),
        ("wrn16_4", "block", 16),
        ("wrn16_4", "templates", 16),
        ("resnet20", "basis", 16),
    ],
)
def test_every_family_trains_as_accurately_with_the_kernel(name, share, size):
    """ImageNet stem + maxpool, bottleneck (projection shortcut), pre-activation and wide blocks,
    template mixes and filter-basis convs (a BatchNorm inside the conv).

    Deep nets on a batch of 4 are sensitive (BatchNorm over as few as 16 values, ReLU inputs near
    0): plain float32 BatchNorm's gradients differ from float64's by up to 3 % there. The kernel
    must come as close to float64 as plain float32 does.
    """
    model = create_model(name, share=share, num_classes=10).to(memory_format=CL)
    x, y = _cl(torch.randn(4, 3, size, size)), torch.randint(0, 10, (4,))

    def grads(dtype=torch.float32):
        m = copy.deepcopy(model).to(dtype)
        F.cross_entropy(m(x.to(dtype)), y).backward()
        return torch.cat([p.grad.double().flatten() for p in m.parameters()])

    plain, exact = grads(), grads(torch.float64)
    use_fused_kernel(model)
    fast = grads()
    err = {k: ((g - exact).norm() / exact.norm()).item() for k, g in (("fused", fast), ("plain", plain))}
    assert err["fused"] <= 1.5 * err["plain"] + 1e-5, err
