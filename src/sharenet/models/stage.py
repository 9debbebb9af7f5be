"""A stage: the blocks at one spatial scale, and the place where a ShaResNet kernel is owned."""

from __future__ import annotations

from torch import nn

from ..errors import InvalidArgumentError
from .blocks import BlockSpec
from .layers import SharedKernel
from .sharing import slot_owners


def _one_shape(shapes: list[tuple[int, int]], what: str) -> tuple[int, int] | None:
    if not shapes:
        return None
    if len(set(shapes)) > 1:
        raise InvalidArgumentError(f"{what} would join convs of different shapes: {sorted(set(shapes))}")
    return shapes[0]


class Stage(nn.Module):
    """Blocks at one spatial scale. Under ShaResNet one 3x3 kernel, `self.shared`, serves every
    block slot the family's rule picks; under Dai et al. each picked block owns its own."""

    def __init__(self, specs: list[BlockSpec], scheme: str):
        super().__init__()
        owners = [slot_owners(scheme, i, spec) for i, spec in enumerate(specs)]
        stage_shape = _one_shape(
            [
                spec.slot_shapes()[slot]
                for spec, own in zip(specs, owners, strict=True)
                for slot, o in own.items()
                if o == "stage"
            ],
            "stage sharing",
        )
        self.shared = SharedKernel(*stage_shape) if stage_shape else None
        self.blocks = nn.ModuleList(self._build(spec, own) for spec, own in zip(specs, owners, strict=True))

    def _build(self, spec: BlockSpec, owners: dict[str, str]) -> nn.Module:
        block_shape = _one_shape(
            [spec.slot_shapes()[slot] for slot, o in owners.items() if o == "block"], "block sharing"
        )
        block_kernel = SharedKernel(*block_shape) if block_shape else None
        pick = {"stage": self.shared, "block": block_kernel}
        return spec.build({slot: pick[o] for slot, o in owners.items()}, own_shared=block_kernel)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x
