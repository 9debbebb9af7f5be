"""The four residual blocks of the papers. Each 3x3 conv slot takes the conv the plan builds for it.

A block receives `conv3x3(name)`, which builds the module of its 3x3 slot `name` as the sharing
plan says (own kernel, a borrowed shared kernel, a template mix or a filter-basis conv), so blocks
know nothing of sharing. Under intra-block sharing (Dai et al.) the block owns the kernel as
`self.shared`.
Each normalisation is a `BatchNormAct2d`, which also adds the residual and applies the ReLU that
follow it, so that the fast path can run the three as one kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .layers import SharedKernel, conv1x1, make_shortcut
from .norm_act import BatchNormAct2d

Conv3x3Factory = Callable[[str], nn.Module]  # slot name -> the module the plan gives it


@dataclass(frozen=True)
class BlockSpec:
    """One residual block's shape; `width` is the channel count of its 3x3 conv(s)."""

    kind: str  # "basic" | "bottleneck" | "preact_bottleneck" | "wide"
    in_ch: int
    out_ch: int
    stride: int
    width: int
    shortcut: str = "B"  # how a shape change is bridged: "A", "B" or "conv"
    dropout: float = 0.0  # wide blocks only, between the two 3x3 convs

    def slots(self) -> dict[str, tuple[int, int, int, str | None]]:
        """The 3x3 slots a sharing plan may redirect: (in_ch, out_ch, stride, the BatchNorm after it)."""
        if self.kind == "basic":
            return {
                "conv1": (self.in_ch, self.out_ch, self.stride, "bn1"),
                "conv2": (self.out_ch, self.out_ch, 1, "bn2"),
            }
        if self.kind == "wide":
            return {
                "conv1": (self.in_ch, self.out_ch, self.stride, "bn2"),
                "conv2": (self.out_ch, self.out_ch, 1, None),
            }
        if self.kind == "bottleneck":
            return {"conv2": (self.width, self.width, self.stride, "bn2")}
        return {"conv2": (self.width, self.width, 1, "bn3")}

    def build(self, conv3x3: Conv3x3Factory, own_shared: SharedKernel | None) -> nn.Module:
        return BLOCKS[self.kind](self, conv3x3, own_shared)


class _Block(nn.Module):
    residual_norm: str | None = None  # the BatchNorm just before the residual add; pre-activation blocks have none

    def __init__(self, own_shared: SharedKernel | None):
        super().__init__()
        self.shared = own_shared  # intra-block kernel, registered here once; None otherwise


class _PreActBlock(_Block):
    def entry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(BN-ReLU of the input, the skip path): a projecting block feeds both from the BN-ReLU."""
        pre = self.bn1(x)
        return pre, self.shortcut(pre) if self.projects else x


class BasicBlock(_Block):
    """Post-activation basic block (He et al.): conv3x3(stride)-BN-ReLU-conv3x3-BN, add, ReLU."""

    residual_norm = "bn2"

    def __init__(self, spec: BlockSpec, conv3x3: Conv3x3Factory, own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.conv1 = conv3x3("conv1")
        self.bn1 = BatchNormAct2d(spec.out_ch)
        self.conv2 = conv3x3("conv2")
        self.bn2 = BatchNormAct2d(spec.out_ch)
        self.shortcut = make_shortcut(spec.shortcut, spec.in_ch, spec.out_ch, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x))
        return self.bn2(self.conv2(out), self.shortcut(x))


class Bottleneck(_Block):
    """Post-activation bottleneck, torchvision's "v1.5": 1x1-BN-ReLU-3x3(stride)-BN-ReLU-1x1-BN."""

    residual_norm = "bn3"

    def __init__(self, spec: BlockSpec, conv3x3: Conv3x3Factory, own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.conv1 = conv1x1(spec.in_ch, spec.width)
        self.bn1 = BatchNormAct2d(spec.width)
        self.conv2 = conv3x3("conv2")
        self.bn2 = BatchNormAct2d(spec.width)
        self.conv3 = conv1x1(spec.width, spec.out_ch)
        self.bn3 = BatchNormAct2d(spec.out_ch)
        self.shortcut = make_shortcut(spec.shortcut, spec.in_ch, spec.out_ch, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        return self.bn3(self.conv3(out), self.shortcut(x))


class PreActBottleneck(_PreActBlock):
    """Pre-activation bottleneck (He et al. 2016b, ResNet-164/1001): BN-ReLU-1x1-BN-ReLU-3x3-BN-ReLU-1x1.

    A block that changes the shape applies one BN-ReLU to its input, feeding both branches, puts
    its stride on the first 1x1 and projects the shortcut with a strided 1x1 conv (no BN).
    """

    def __init__(self, spec: BlockSpec, conv3x3: Conv3x3Factory, own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.projects = spec.in_ch != spec.out_ch or spec.stride != 1
        self.bn1 = BatchNormAct2d(spec.in_ch)
        self.conv1 = conv1x1(spec.in_ch, spec.width, spec.stride)
        self.bn2 = BatchNormAct2d(spec.width)
        self.conv2 = conv3x3("conv2")
        self.bn3 = BatchNormAct2d(spec.width)
        self.conv3 = conv1x1(spec.width, spec.out_ch)
        self.shortcut = make_shortcut("conv", spec.in_ch, spec.out_ch, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre, skip = self.entry(x)
        out = self.conv1(pre)
        out = self.conv2(self.bn2(out))
        out = self.conv3(self.bn3(out))
        return out + skip


class WideBasic(_PreActBlock):
    """Wide-ResNet block (Zagoruyko & Komodakis): BN-ReLU-3x3(stride)-BN-ReLU-dropout-3x3.

    A block whose widths differ applies one BN-ReLU to its input, feeding both branches, and
    projects the shortcut with a strided 1x1 conv (no BN).
    """

    def __init__(self, spec: BlockSpec, conv3x3: Conv3x3Factory, own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.projects = spec.in_ch != spec.out_ch or spec.stride != 1
        self.bn1 = BatchNormAct2d(spec.in_ch)
        self.conv1 = conv3x3("conv1")
        self.bn2 = BatchNormAct2d(spec.out_ch)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.conv2 = conv3x3("conv2")
        self.shortcut = make_shortcut("conv", spec.in_ch, spec.out_ch, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre, skip = self.entry(x)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.bn2(out)))
        return out + skip


def zero_init_residual(model: nn.Module) -> int:
    """Zero the scale of each block's last BatchNorm, so that every block starts as the identity.

    Goyal et al.'s initialisation (torchvision's `zero_init_residual`): a short run trains a
    shallow network first. The scale belongs to the block's own BatchNorm, never to a kernel, so
    it applies unchanged under every sharing scheme. Pre-activation blocks end in a conv, which
    may be shared: they have nothing to zero. Returns how many scales were zeroed.
    """
    count = 0
    for block in model.modules():
        if isinstance(block, _Block) and block.residual_norm:
            nn.init.zeros_(getattr(block, block.residual_norm).weight)
            count += 1
    return count


BLOCKS = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_bottleneck": PreActBottleneck,
    "wide": WideBasic,
}
