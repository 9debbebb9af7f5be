"""A stage: the blocks at one spatial scale, and where the plan's shared tensors are owned.

The stage reads its part of the sharing plan (plan.py): it creates the tensors the plan places
under it (a ShaResNet kernel `shared`, a template `bank`, filter bases `basis`/`basis1`/`basis2`)
and, as each block asks for its convs, builds every conv from its plan slot, handing it the
shared module it uses (the parameter ring, owned by the network, is handed in). A 1x1 conv the
plan does not redirect is an ordinary conv.
"""

from __future__ import annotations

from torch import nn

from .blocks import BlockSpec
from .layers import Conv3x3, SharedKernel, conv1x1
from .learned import BasisConv3x3, TemplateBank, TemplateConv3x3, orthogonal_bases, orthogonal_coefficients
from .plan import ConvSlot, Owned, SharePlan
from .ring import RingConv


def make_owned(owned: Owned) -> nn.Module:
    """The module holding one shared tensor: a kernel (or basis), or a bank of templates."""
    return (
        TemplateBank(owned.count, owned.in_ch, owned.out_ch) if owned.count else SharedKernel(owned.in_ch, owned.out_ch)
    )


def make_conv(slot: ConvSlot, owners: dict[str, nn.Module]) -> nn.Module:
    """The module of one 3x3 slot, as its plan entry says."""
    shared = owners[slot.owned.path] if slot.owned else None
    if slot.source == "ring":
        return RingConv(slot.in_ch, slot.out_ch, slot.kernel, slot.stride, shared, slot.offset, slot.rank)
    if slot.source == "templates":
        return TemplateConv3x3(slot.in_ch, slot.out_ch, slot.stride, shared)
    if slot.source == "basis":
        return BasisConv3x3(slot.in_ch, slot.out_ch, slot.stride, shared, slot.own_rank)
    return Conv3x3(slot.in_ch, slot.out_ch, slot.stride, shared, rank=slot.rank)


class Stage(nn.Module):
    """Blocks at one spatial scale. Under ShaResNet one 3x3 kernel, `self.shared`, serves every
    block slot the family's rule picks; under templates `self.bank` and under filter bases
    `self.basis` (or `basis1`, `basis2`) serve blocks 2..n; under Dai et al. each picked block
    owns its kernel."""

    def __init__(self, specs: list[BlockSpec], plan: SharePlan, index: int, owners: dict[str, nn.Module]):
        """`owners`: the shared modules owned above the stage (the ring), by plan path."""
        super().__init__()
        path = f"stages.{index}"
        owners = dict(owners)
        for owned in plan.owned_by(path):
            owners[owned.path] = make_owned(owned)
            setattr(self, owned.name, owners[owned.path])
        blocks = []
        for i, spec in enumerate(specs):
            block = f"{path}.blocks.{i}"
            for owned in plan.owned_by(block):  # intra-block kernel, before the block's convs
                owners[owned.path] = make_owned(owned)
            kernel = owners.get(f"{block}.shared")
            blocks.append(spec.build(block_convs(spec, plan.block_slots(block), owners), own_shared=kernel))
        self.blocks = nn.ModuleList(blocks)
        orthogonal_coefficients([m for m in self.modules() if isinstance(m, TemplateConv3x3)])
        orthogonal_bases([m for name, m in self.named_children() if name.startswith("basis")])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def block_convs(spec: BlockSpec, slots: dict[str, ConvSlot], owners: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Every conv of a block, in its slots' order: the plan's module, or an ordinary conv where the
    plan has no entry (the 1x1s outside the ring)."""
    return {
        name: make_conv(slots[name], owners)
        if name in slots
        else conv1x1(c.in_ch, c.out_ch, c.stride)
        if c.kernel == 1
        else Conv3x3(c.in_ch, c.out_ch, c.stride)
        for name, c in spec.convs().items()
    }
