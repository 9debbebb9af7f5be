"""Convolutions that may borrow their kernel, and the parameter-free / projection shortcuts.

The one mechanism of weight sharing in sharenet lives here: a shared tensor (a `SharedKernel`, or
learned.py's template bank) is registered once, under the module the plan makes its owner (a stage,
or a block for Dai et al.), and every `Conv3x3` that uses it holds a plain reference to that module.
Because the reference is not a registered submodule, `state_dict()` has exactly one key per distinct tensor; because it
points at the module rather than at its Parameter, the tie survives `load_state_dict(assign=True)`,
meta-device construction + `to_empty`, `.to()` and `deepcopy` (which follows object identity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError
from .norm_act import BatchNormAct2d


def _init_kernel(weight: torch.Tensor) -> None:
    # He et al. / torchvision initialisation for convolutions followed by ReLU.
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


class SharedKernel(nn.Module):
    """One 3x3 kernel (out_ch, in_ch, 3, 3) that several `Conv3x3` layers apply."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, 3, 3))
        _init_kernel(self.weight)

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, kernel_size=(3, 3)"


class LowRank(nn.Module):
    """Relaxed sharing's correction of one conv: B (out, r) @ A (r, in*k*k), added to the kernel it
    reads. LoRA's initialisation (Hu et al. 2022): A Kaiming-uniform, B zero, so that a network
    built with corrections starts as its hard-shared self and each correction learns what its
    conv needs; a fit (weights/fit.py) sets both from the kernel the conv is to apply."""

    def __init__(self, rank: int, out_ch: int, fan_in: int):
        super().__init__()
        self.a = nn.Parameter(torch.empty(rank, fan_in))
        self.b = nn.Parameter(torch.zeros(out_ch, rank))
        nn.init.kaiming_uniform_(self.a, a=5**0.5)

    def add_to(self, kernel: torch.Tensor) -> torch.Tensor:
        """kernel + B A: one (out, r) x (r, in*k*k) matmul per forward, not a second convolution."""
        return kernel + (self.b @ self.a).view_as(kernel)

    def extra_repr(self) -> str:
        return f"rank={self.a.shape[0]}"


class Conv3x3(nn.Module):
    """3x3 convolution, padding 1, no bias; its kernel is its own, borrowed, or both stacked.

    `kernel`: a module whose kernel this conv applies (a `SharedKernel`, or a template bank that
    a subclass mixes). `own`: output filters of its own, stacked before the borrowed ones (a
    filter-basis conv: own basis, then the stage's shared basis); default all or none. A
    borrowed kernel may be applied with a different stride than its other users (intra-block
    sharing applies one kernel with stride 2, then 1). `rank`: relaxed sharing, a low-rank
    correction of its own added to the borrowed kernel (`relax`, a `LowRank`).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        kernel: nn.Module | None = None,
        *,
        own: int | None = None,
        rank: int = 0,
    ):
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        own = (out_ch if kernel is None else 0) if own is None else own
        if kernel is not None and (kernel.in_ch, kernel.out_ch + own) != (in_ch, out_ch):
            raise InvalidArgumentError(
                f"shared kernel maps {kernel.in_ch}->{kernel.out_ch} channels, this conv needs {in_ch}->{out_ch - own}"
            )
        self.own = own  # output filters of its own (rows of `weight`); the borrowed ones follow
        if own:
            self.weight = nn.Parameter(torch.empty(own, in_ch, 3, 3))
            _init_kernel(self.weight)
        self._borrowed: tuple[nn.Module, ...] = () if kernel is None else (kernel,)  # a tuple: not registered again
        if rank:
            if kernel is None or own:
                raise InvalidArgumentError("a low-rank correction applies to a conv that borrows its whole kernel")
            self.relax = LowRank(rank, out_ch, in_ch * 9)

    @property
    def borrowed(self) -> nn.Module | None:
        """The module whose kernel this conv applies, or None when the kernel is its own."""
        return self._borrowed[0] if self._borrowed else None

    def kernel(self) -> torch.Tensor:
        """The (out_ch, in_ch, 3, 3) tensor applied in forward: own, borrowed, or own rows then borrowed."""
        if not self._borrowed:
            return self.weight
        shared = self._borrowed[0].weight
        if self.own:
            return torch.cat([self.weight, shared])
        return self.relax.add_to(shared) if hasattr(self, "relax") else shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), None, self.stride, 1)

    def extra_repr(self) -> str:
        src = "own" if not self._borrowed else "own+shared" if self.own else "shared"
        src += "+low-rank" if hasattr(self, "relax") else ""
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}, kernel={src}"


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
    _init_kernel(conv.weight)
    return conv


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample by the stride and zero-pad the new channels (no parameters)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        if (out_ch - in_ch) % 2:
            raise InvalidArgumentError(f"option A shortcut needs an even channel increase, got {in_ch}->{out_ch}")
        self.stride, self.pad = stride, (out_ch - in_ch) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))


class ProjectionShortcut(nn.Module):
    """Option B: a strided 1x1 conv (the block's slot "shortcut.conv"), then BatchNorm unless
    `norm=False` (pre-activation nets)."""

    def __init__(self, conv: nn.Module, out_ch: int, norm: bool = True):
        super().__init__()
        self.conv = conv
        self.bn = BatchNormAct2d(out_ch, act=False) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def make_shortcut(spec, conv: nn.Module | None) -> nn.Module:
    """Identity when the block keeps the shape, else option 'A' (pad), 'B' (1x1+BN) or 'conv' (1x1 only);
    `conv`: the module of the block's slot "shortcut.conv" (spec: the block's BlockSpec)."""
    kind = spec.shortcut_kind
    if not spec.projects:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(spec.in_ch, spec.out_ch, spec.stride)
    if kind in ("B", "conv"):
        return ProjectionShortcut(conv, spec.out_ch, norm=kind == "B")
    raise InvalidArgumentError(f"unknown shortcut {kind!r}; valid: 'A', 'B', 'conv'")
