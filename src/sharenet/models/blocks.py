"""The four residual blocks of the papers. Each 3x3 conv slot takes the kernel the plan hands it.

A block receives `kernels`: for each 3x3 slot, the `SharedKernel` to borrow, or None for an own
kernel. Under intra-block sharing (Dai et al.) the block itself owns the kernel as `self.shared`.
Each normalisation is a `BatchNormAct2d`, which also adds the residual and applies the ReLU that
follow it, so that the fast path can run the three as one kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import Conv3x3, SharedKernel, conv1x1, make_shortcut
from .norm_act import BatchNormAct2d


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

    def slot_shapes(self) -> dict[str, tuple[int, int]]:
        """The 3x3 slots a sharing plan may redirect, with their (in_ch, out_ch)."""
        if self.kind in ("basic", "wide"):
            return {"conv1": (self.in_ch, self.out_ch), "conv2": (self.out_ch, self.out_ch)}
        return {"conv2": (self.width, self.width)}

    def build(self, kernels: dict[str, SharedKernel | None], own_shared: SharedKernel | None) -> nn.Module:
        return BLOCKS[self.kind](self, kernels, own_shared)


class _Block(nn.Module):
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

    def __init__(self, spec: BlockSpec, kernels: dict, own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.conv1 = Conv3x3(spec.in_ch, spec.out_ch, spec.stride, kernels.get("conv1"))
        self.bn1 = BatchNormAct2d(spec.out_ch)
        self.conv2 = Conv3x3(spec.out_ch, spec.out_ch, 1, kernels.get("conv2"))
        self.bn2 = BatchNormAct2d(spec.out_ch)
        self.shortcut = make_shortcut(spec.shortcut, spec.in_ch, spec.out_ch, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x))
        return self.bn2(self.conv2(out), self.shortcut(x))


class Bottleneck(_Block):
    """Post-activation bottleneck, torchvision's "v1.5": 1x1-BN-ReLU-3x3(stride)-BN-ReLU-1x1-BN."""

    def __init__(self, spec: BlockSpec, kernels: dict, own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.conv1 = conv1x1(spec.in_ch, spec.width)
        self.bn1 = BatchNormAct2d(spec.width)
        self.conv2 = Conv3x3(spec.width, spec.width, spec.stride, kernels.get("conv2"))
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

    def __init__(self, spec: BlockSpec, kernels: dict, own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.projects = spec.in_ch != spec.out_ch or spec.stride != 1
        self.bn1 = BatchNormAct2d(spec.in_ch)
        self.conv1 = conv1x1(spec.in_ch, spec.width, spec.stride)
        self.bn2 = BatchNormAct2d(spec.width)
        self.conv2 = Conv3x3(spec.width, spec.width, 1, kernels.get("conv2"))
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

    def __init__(self, spec: BlockSpec, kernels: dict, own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.projects = spec.in_ch != spec.out_ch or spec.stride != 1
        self.bn1 = BatchNormAct2d(spec.in_ch)
        self.conv1 = Conv3x3(spec.in_ch, spec.out_ch, spec.stride, kernels.get("conv1"))
        self.bn2 = BatchNormAct2d(spec.out_ch)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.conv2 = Conv3x3(spec.out_ch, spec.out_ch, 1, kernels.get("conv2"))
        self.shortcut = make_shortcut("conv", spec.in_ch, spec.out_ch, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre, skip = self.entry(x)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.bn2(out)))
        return out + skip


BLOCKS = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_bottleneck": PreActBottleneck,
    "wide": WideBasic,
}
