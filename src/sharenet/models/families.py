"""Architecture specs of the papers' four families: each a list of stages of `BlockSpec`s.

The numbers here are the ones the papers' parameter counts depend on (ShaResNet's README table,
He et al. 2016, Zagoruyko & Komodakis 2016): CIFAR basic ResNets (He et al. 2016, depth 6n+2),
torchvision's ImageNet ResNets, pre-activation bottleneck ResNets (depth 9n+2, as in the
Wide-ResNet authors' code) and WRN-d-k (depth 6n+4).
Each takes a `width`: the channels of the first stage's 3x3 convs, the later stages' in proportion
(x2, x4, x8), and the stem's output with them where it feeds the first stage directly. A narrower
unshared network is the baseline RPG and Savarese & Maire compare sharing against at equal size.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgumentError
from .blocks import BlockSpec


@dataclass(frozen=True)
class ArchSpec:
    family: str  # "cifar" | "imagenet" | "preact" | "wrn"
    kind: str  # block kind shared by every stage
    stem: str  # "cifar": 3x3-BN-ReLU; "imagenet": 7x7/2-BN-ReLU-maxpool; "plain": a lone 3x3
    stem_ch: int
    stages: tuple[tuple[BlockSpec, ...], ...]
    preact_head: bool  # pre-activation nets end with BN-ReLU before pooling
    input_size: int  # native input side, used for compute accounting
    default_classes: int

    @property
    def out_ch(self) -> int:
        return self.stages[-1][-1].out_ch

    @property
    def width(self) -> int:
        """Channels of the first stage's 3x3 convs."""
        return self.stages[0][0].width


def _check_width(width: int) -> None:
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise InvalidArgumentError(f"width must be a positive integer, got {width!r}")


def _stages(kind, in_ch, outs, widths, counts, strides, **extra) -> tuple[tuple[BlockSpec, ...], ...]:
    stages = []
    for out_ch, width, count, stride in zip(outs, widths, counts, strides, strict=True):
        blocks = []
        for i in range(count):
            blocks.append(BlockSpec(kind, in_ch, out_ch, stride if i == 0 else 1, width, **extra))
            in_ch = out_ch
        stages.append(tuple(blocks))
    return tuple(stages)


def cifar_resnet(depth: int, shortcut: str = "A", width: int = 16) -> ArchSpec:
    """He et al. 2016's CIFAR ResNet: 3 stages of n basic blocks, widths 16/32/64 (width x1, x2, x4)."""
    n = (depth - 2) // 6
    if depth < 8 or (depth - 2) % 6:
        raise InvalidArgumentError(
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}"
        )
    if shortcut not in ("A", "B"):
        raise InvalidArgumentError(
            f"CIFAR ResNet shortcut must be 'A' (zero-pad) or 'B' (1x1 conv + BN), got {shortcut!r}"
        )
    _check_width(width)
    if shortcut == "A" and width % 2:
        raise InvalidArgumentError(
            f"option A shortcuts zero-pad half the new channels on each side: width must be even, got {width}"
        )
    widths = (width, 2 * width, 4 * width)
    stages = _stages("basic", width, widths, widths, (n,) * 3, (1, 2, 2), shortcut=shortcut)
    return ArchSpec("cifar", "basic", "cifar", width, stages, False, 32, 10)


IMAGENET_LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def imagenet_resnet(depth: int, width: int = 64) -> ArchSpec:
    """torchvision's ResNet-18..152 (shortcut B where the shape changes, bottleneck stride on the 3x3)."""
    if depth not in IMAGENET_LAYOUTS:
        raise InvalidArgumentError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_LAYOUTS)}, got {depth}")
    _check_width(width)
    kind, counts = IMAGENET_LAYOUTS[depth]
    widths = (width, 2 * width, 4 * width, 8 * width)
    outs = widths if kind == "basic" else tuple(4 * w for w in widths)
    stages = _stages(kind, width, outs, widths, counts, (1, 2, 2, 2), shortcut="B")
    return ArchSpec("imagenet", kind, "imagenet", width, stages, False, 224, 1000)


def preact_resnet(depth: int, width: int = 16) -> ArchSpec:
    """Pre-activation bottleneck ResNet (ResNet-164/1001): stage outputs 64/128/256, width out/4."""
    if depth < 11 or (depth - 2) % 9:
        raise InvalidArgumentError(
            f"pre-activation ResNet depth must be 9n+2 with n >= 1 (164, 1001, ...), got {depth}"
        )
    _check_width(width)
    n = (depth - 2) // 9
    widths = (width, 2 * width, 4 * width)
    stages = _stages("preact_bottleneck", width, tuple(4 * w for w in widths), widths, (n,) * 3, (1, 2, 2))
    return ArchSpec("preact", "preact_bottleneck", "plain", width, stages, True, 32, 10)


def wide_resnet(depth: int, widen: int, dropout: float = 0.0, width: int | None = None) -> ArchSpec:
    """WRN-d-k (Zagoruyko & Komodakis): n=(d-4)/6 wide blocks per stage, widths 16k/32k/64k
    (`width`, default 16k, x1, x2, x4); the stem keeps 16 channels at every width, as k leaves it."""
    if depth < 10 or (depth - 4) % 6:
        raise InvalidArgumentError(f"Wide ResNet depth must be 6n+4 with n >= 1 (16, 22, 28, 40, ...), got {depth}")
    if widen < 1:
        raise InvalidArgumentError(f"Wide ResNet widening factor k must be >= 1, got {widen}")
    if not 0.0 <= dropout < 1.0:
        raise InvalidArgumentError(f"dropout must be in [0, 1), got {dropout}")
    width = 16 * widen if width is None else width
    _check_width(width)
    n = (depth - 4) // 6
    outs = (width, 2 * width, 4 * width)
    stages = _stages("wide", 16, outs, outs, (n,) * 3, (1, 2, 2), dropout=dropout)
    return ArchSpec("wrn", "wide", "plain", 16, stages, True, 32, 10)
