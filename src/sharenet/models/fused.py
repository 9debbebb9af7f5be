"""The fused BatchNorm(+residual add)+ReLU CPU kernel behind `BatchNormAct2d`'s fast path.

On a CPU the BatchNorm layers of these networks are bound by memory traffic, and inductor's
fused kernels for BN-(add)-ReLU make more passes over it than needed. `csrc/bn_act.cpp` does the
work in the fewest passes (two forward, two backward) and is registered as the custom op
`sharenet_cpu::bn_act_fwd` with an autograd formula and a fake implementation, so it works in
eager mode and under torch.compile alike. The README's speed section gives its measured effect.

`bn_act` is called by a `BatchNormAct2d` switched to the kernel (norm_act.use_fused_kernel), in
training mode, where `applies` holds: a CPU tensor in channels_last layout whose result equals
BatchNorm's. Everywhere else the layer runs ordinary BatchNorm.

The kernel is compiled on first `load()` (cached by torch under ~/.cache/torch_extensions or
$TORCH_EXTENSIONS_DIR) with the vector ISA torch's inductor picks for this CPU.
SHARENET_FUSED_BN=0 turns it off.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

_SOURCE = Path(__file__).with_name("csrc") / "bn_act.cpp"
_state = {"loaded": False, "tried": False}


def _cflags() -> list[str]:
    """-O3 plus the vector ISA inductor would use here (AVX-512/AVX2 at::vec), or none."""
    flags = ["-O3", "-fopenmp"]
    try:
        from torch._inductor import cpu_vec_isa

        isa = cpu_vec_isa.pick_vec_isa()
        flags += [f"-D{m}" for m in isa.build_macro()] + isa.build_arch_flags().split()
    except Exception:  # at::vec falls back to its portable (scalar-array) implementation
        pass
    return flags


def _ensure_ninja() -> None:
    """torch's extension builder runs `ninja` from PATH; the PyPI wheel may only be in the venv."""
    if shutil.which("ninja"):
        return
    try:
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass


def _register() -> None:
    @torch.library.register_fake("sharenet_cpu::bn_act_fwd")
    def _fwd_fake(x, residual, weight, bias, eps, relu):
        c = x.shape[1]
        return torch.empty_like(x), weight.new_empty(c), weight.new_empty(c)

    @torch.library.register_fake("sharenet_cpu::bn_act_bwd")
    def _bwd_fake(dy, x, y, mean, invstd, weight, relu, has_residual):
        c = x.shape[1]
        dr = torch.empty_like(x) if has_residual else x.new_empty(0)
        return torch.empty_like(x), weight.new_empty(c), weight.new_empty(c), dr

    def setup_context(ctx, inputs, output):
        x, residual, weight, _bias, _eps, relu = inputs
        y, mean, invstd = output
        ctx.save_for_backward(x, y, mean, invstd, weight)
        ctx.relu, ctx.has_residual = relu, residual is not None

    def backward(ctx, dy, _dmean, _dinvstd):
        x, y, mean, invstd, weight = ctx.saved_tensors
        dx, dw, db, dr = torch.ops.sharenet_cpu.bn_act_bwd(dy, x, y, mean, invstd, weight, ctx.relu, ctx.has_residual)
        return dx, (dr if ctx.has_residual else None), dw, db, None, None

    torch.library.register_autograd("sharenet_cpu::bn_act_fwd", backward, setup_context=setup_context)


def extension_name(flags: list[str] | None = None) -> str:
    """The kernel's name in torch's extension cache: its source, flags and torch version hashed, so a
    change to any of them builds anew."""
    flags = _cflags() if flags is None else flags
    tag = hashlib.sha1("\0".join([_SOURCE.read_text(), *flags, torch.__version__]).encode()).hexdigest()[:12]
    return f"sharenet_bn_act_{tag}"


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """Hold an flock on the build directory while torch builds or loads the kernel. torch's own lock
    is a file that only its creator deletes: a process killed mid-build (a SIGKILL, a lost node)
    leaves it, and every later process waits on it forever. The kernel releases an flock when its
    holder dies, so whoever holds this one knows no live sharenet process is building, and removes a
    torch lock it finds as the leftover it is."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / "sharenet.flock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        (build_dir / "lock").unlink(missing_ok=True)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def load() -> bool:
    """Build (once) and register the kernel; False, with one warning, where that is impossible."""
    if _state["tried"]:
        return _state["loaded"]
    _state["tried"] = True
    if os.environ.get("SHARENET_FUSED_BN", "1") == "0":
        return False
    flags = _cflags()
    try:
        from torch.utils import cpp_extension

        _ensure_ninja()
        name = extension_name(flags)
        with _build_lock(Path(cpp_extension._get_build_directory(name, verbose=False))):
            cpp_extension.load(
                name, [str(_SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"], is_python_module=False
            )
        _register()
    except Exception as e:  # no compiler, no ninja, an unsupported platform: the plain path still works
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        warnings.warn(
            "sharenet: the fused BatchNorm kernel could not be built (it needs g++ and ninja); training "
            "uses plain BatchNorm, slower on CPU; SHARENET_FUSED_BN=0 skips the attempt. "
            f"Cause: {first[:200]}",
            stacklevel=2,
        )
        return False
    _state["loaded"] = True
    return True


def applies(bn: nn.BatchNorm2d, x: torch.Tensor, residual: torch.Tensor | None) -> bool:
    """The kernel gives exactly BatchNorm's training-mode result for these inputs."""
    return (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype in (torch.bfloat16, torch.float32)
        and x.is_contiguous(memory_format=torch.channels_last)
        and x.numel() > x.shape[1]  # one value per channel: leave BatchNorm's own error to say so
        and bn.weight.dtype == torch.float32
        and (residual is None or (residual.shape == x.shape and residual.dtype == x.dtype))
    )


def update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """What nn.BatchNorm2d does in training mode, for a layer that computed its batch statistics
    itself: `var` is the biased variance over `n` values per channel, the running one is unbiased;
    momentum=None keeps the cumulative average."""
    if not bn.track_running_stats:
        return
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        factor = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked.item()
        bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), factor)
        bn.running_var.lerp_((var * (n / max(n - 1, 1))).to(bn.running_var.dtype), factor)


def bn_act(bn: nn.BatchNorm2d, x: torch.Tensor, residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """relu(bn(x) + residual) in one kernel, running statistics updated as nn.BatchNorm2d does."""
    if residual is not None:  # an option-A shortcut's zero-padded output may come out NCHW
        residual = residual.contiguous(memory_format=torch.channels_last)
    y, mean, invstd = torch.ops.sharenet_cpu.bn_act_fwd(x, residual, bn.weight, bn.bias, bn.eps, relu)
    var = (invstd.double().pow(-2) - bn.eps).clamp_min(0).float()  # the kernel returns 1/sqrt(var + eps)
    update_running_stats(bn, mean, var, x.numel() // x.shape[1])
    return y
