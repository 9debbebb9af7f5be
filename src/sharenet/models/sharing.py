"""Sharing rules: which 3x3 conv of which block uses which kernel, per family and scheme.

This table is the whole of the papers' sharing logic. A rule maps (block index in its stage,
block spec) to an owner for each 3x3 slot: "stage" (the stage's one ShaResNet kernel) or
"block" (the block's one Dai et al. kernel); a slot not named keeps its own kernel.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InvalidArgumentError
from .blocks import BlockSpec

SCHEMES = ("none", "stage", "block")
Rule = Callable[[int, BlockSpec], dict[str, str]]


def every_block(slot: str) -> Rule:
    """ShaResNet on post-activation basic blocks: the second 3x3 of every block, the first too."""
    return lambda i, spec: {slot: "stage"}


def after_first(slot: str) -> Rule:
    """ShaResNet on pre-activation families: blocks 2..n; the first block is entirely own."""
    return lambda i, spec: {slot: "stage"} if i > 0 else {}


def stride_one(slot: str) -> Rule:
    """ShaResNet on v1.5 bottlenecks: every 3x3 applied with stride 1."""
    return lambda i, spec: {slot: "stage"} if spec.stride == 1 else {}


def channel_preserving(i: int, spec: BlockSpec) -> dict[str, str]:
    """Dai et al.: both 3x3 convs share one kernel when conv1 maps C->C channels."""
    return {"conv1": "block", "conv2": "block"} if spec.in_ch == spec.out_ch else {}


def no_sharing(i: int, spec: BlockSpec) -> dict[str, str]:
    return {}


SHARING_RULES: dict[str, dict[str, Rule]] = {
    "basic": {"stage": every_block("conv2"), "block": channel_preserving},
    "bottleneck": {"stage": stride_one("conv2")},
    "preact_bottleneck": {"stage": after_first("conv2")},
    "wide": {"stage": after_first("conv2"), "block": channel_preserving},
}


def check_scheme(scheme: str, kind: str) -> None:
    """Raise ValueError for an unknown scheme or one the block kind cannot take."""
    if scheme not in SCHEMES:
        raise InvalidArgumentError(f"unknown sharing scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    if scheme != "none" and scheme not in SHARING_RULES[kind]:
        raise InvalidArgumentError(
            f"share={scheme!r} needs a block with two 3x3 convs, but {kind} blocks have one; "
            f"valid for this family: {', '.join(['none', *SHARING_RULES[kind]])}"
        )


def slot_owners(scheme: str, index: int, spec: BlockSpec) -> dict[str, str]:
    """Owner ("stage" or "block") of each redirected 3x3 slot of one block."""
    rule = no_sharing if scheme == "none" else SHARING_RULES[spec.kind][scheme]
    return rule(index, spec)
