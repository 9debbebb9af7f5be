"""The four residual blocks of the papers. Each conv slot takes the conv the plan built for it.

Each block class declares its conv slots once (`conv_slots`: shapes, stride, the BatchNorm after
each); the stage builds every slot's module as the sharing plan says (own kernel, a borrowed
shared kernel, a template mix, a filter-basis conv or a view of the parameter ring) and hands
them in by slot name ("conv1", ..., "shortcut.conv"), as torchvision and timm hand a block its
`downsample`: blocks know nothing of sharing. Under intra-block sharing (Dai et al.) the block
owns the kernel as `self.shared`.
Each normalisation is a `BatchNormAct2d`, which also adds the residual and applies the ReLU that
follow it, so that the fast path can run the three as one kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

from .layers import SharedKernel, make_shortcut
from .norm_act import BatchNormAct2d

BlockKind = Literal["basic", "bottleneck", "preact_bottleneck", "wide"]
Shortcut = Literal["A", "B", "conv"]  # zero-pad (He et al.'s option A), 1x1 conv + BN (B), bare 1x1 conv


class ConvSpec(NamedTuple):
    """One conv slot of a block."""

    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    norm: str | None  # the block's BatchNorm right after it, if any


@dataclass(frozen=True)
class BlockSpec:
    """One residual block's shape; `width` is the channel count of its 3x3 conv(s)."""

    kind: BlockKind
    in_ch: int
    out_ch: int
    stride: int
    width: int
    shortcut: Shortcut = "B"  # how a shape change is bridged (pre-activation blocks: always "conv")
    dropout: float = 0.0  # wide blocks only, between the two 3x3 convs

    @property
    def projects(self) -> bool:
        """The shortcut changes the shape (a 1x1 conv or option A's padding bridges it)."""
        return self.in_ch != self.out_ch or self.stride != 1

    def convs(self) -> dict[str, ConvSpec]:
        """Every conv slot of the block in module order: its class's, then the shortcut's 1x1 conv."""
        convs = BLOCKS[self.kind].conv_slots(self)
        if self.projects and self.shortcut_kind != "A":
            norm = "shortcut.bn" if self.shortcut_kind == "B" else None
            convs["shortcut.conv"] = ConvSpec(self.in_ch, self.out_ch, 1, self.stride, norm)
        return convs

    @property
    def shortcut_kind(self) -> Shortcut:
        """How a shape change is bridged: pre-activation blocks always project with a bare 1x1 conv."""
        return "conv" if self.kind in ("preact_bottleneck", "wide") else self.shortcut

    def build(self, convs: dict[str, nn.Module], own_shared: SharedKernel | None) -> nn.Module:
        """The block, given the module of each of `convs()`'s slots."""
        return BLOCKS[self.kind](self, convs, own_shared)


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

    @staticmethod
    def conv_slots(spec: BlockSpec) -> dict[str, ConvSpec]:
        i, o, s = spec.in_ch, spec.out_ch, spec.stride
        return {"conv1": ConvSpec(i, o, 3, s, "bn1"), "conv2": ConvSpec(o, o, 3, 1, "bn2")}

    def __init__(self, spec: BlockSpec, convs: dict[str, nn.Module], own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.conv1 = convs["conv1"]
        self.bn1 = BatchNormAct2d(spec.out_ch)
        self.conv2 = convs["conv2"]
        self.bn2 = BatchNormAct2d(spec.out_ch)
        self.shortcut = make_shortcut(spec, convs.get("shortcut.conv"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x))
        return self.bn2(self.conv2(out), self.shortcut(x))


class Bottleneck(_Block):
    """Post-activation bottleneck, torchvision's "v1.5": 1x1-BN-ReLU-3x3(stride)-BN-ReLU-1x1-BN."""

    residual_norm = "bn3"

    @staticmethod
    def conv_slots(spec: BlockSpec) -> dict[str, ConvSpec]:
        i, o, w, s = spec.in_ch, spec.out_ch, spec.width, spec.stride
        return {
            "conv1": ConvSpec(i, w, 1, 1, "bn1"),
            "conv2": ConvSpec(w, w, 3, s, "bn2"),
            "conv3": ConvSpec(w, o, 1, 1, "bn3"),
        }

    def __init__(self, spec: BlockSpec, convs: dict[str, nn.Module], own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.conv1 = convs["conv1"]
        self.bn1 = BatchNormAct2d(spec.width)
        self.conv2 = convs["conv2"]
        self.bn2 = BatchNormAct2d(spec.width)
        self.conv3 = convs["conv3"]
        self.bn3 = BatchNormAct2d(spec.out_ch)
        self.shortcut = make_shortcut(spec, convs.get("shortcut.conv"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        return self.bn3(self.conv3(out), self.shortcut(x))


class PreActBottleneck(_PreActBlock):
    """Pre-activation bottleneck (He et al. 2016b, ResNet-164/1001): BN-ReLU-1x1-BN-ReLU-3x3-BN-ReLU-1x1.

    A block that changes the shape applies one BN-ReLU to its input, feeding both branches, puts
    its stride on the first 1x1 and projects the shortcut with a strided 1x1 conv (no BN).
    """

    @staticmethod
    def conv_slots(spec: BlockSpec) -> dict[str, ConvSpec]:
        i, o, w, s = spec.in_ch, spec.out_ch, spec.width, spec.stride
        return {
            "conv1": ConvSpec(i, w, 1, s, "bn2"),
            "conv2": ConvSpec(w, w, 3, 1, "bn3"),
            "conv3": ConvSpec(w, o, 1, 1, None),
        }

    def __init__(self, spec: BlockSpec, convs: dict[str, nn.Module], own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.projects = spec.projects
        self.bn1 = BatchNormAct2d(spec.in_ch)
        self.conv1 = convs["conv1"]
        self.bn2 = BatchNormAct2d(spec.width)
        self.conv2 = convs["conv2"]
        self.bn3 = BatchNormAct2d(spec.width)
        self.conv3 = convs["conv3"]
        self.shortcut = make_shortcut(spec, convs.get("shortcut.conv"))

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

    @staticmethod
    def conv_slots(spec: BlockSpec) -> dict[str, ConvSpec]:
        i, o, s = spec.in_ch, spec.out_ch, spec.stride
        return {"conv1": ConvSpec(i, o, 3, s, "bn2"), "conv2": ConvSpec(o, o, 3, 1, None)}

    def __init__(self, spec: BlockSpec, convs: dict[str, nn.Module], own_shared: SharedKernel | None):
        super().__init__(own_shared)
        self.projects = spec.projects
        self.bn1 = BatchNormAct2d(spec.in_ch)
        self.conv1 = convs["conv1"]
        self.bn2 = BatchNormAct2d(spec.out_ch)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.conv2 = convs["conv2"]
        self.shortcut = make_shortcut(spec, convs.get("shortcut.conv"))

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
