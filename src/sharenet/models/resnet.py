"""The ResNet assembly: stem, stages (where sharing happens), head."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..errors import PlanMismatchError
from .families import ArchSpec
from .norm_act import BatchNormAct2d
from .plan import SharePlan, Sharing, recognise
from .ring import ParameterRing
from .stage import Stage


class Stem(nn.Module):
    """The input layer; never shared. 'cifar': 3x3-BN-ReLU, 'imagenet': 7x7/2-BN-ReLU-maxpool/2,
    'plain': a lone 3x3 (pre-activation nets normalise inside their first block)."""

    def __init__(self, kind: str, in_chans: int, out_ch: int):
        super().__init__()
        k = 7 if kind == "imagenet" else 3
        self.conv = nn.Conv2d(in_chans, out_ch, k, stride=2 if k == 7 else 1, padding=k // 2, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.bn = BatchNormAct2d(out_ch) if kind != "plain" else None
        self.pool = nn.MaxPool2d(3, stride=2, padding=1) if kind == "imagenet" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.pool(self.bn(x) if self.bn is not None else x)


class Head(nn.Module):
    """(BN-ReLU for pre-activation nets), global average pool, linear classifier."""

    def __init__(self, in_ch: int, num_classes: int, preact: bool):
        super().__init__()
        self.bn = BatchNormAct2d(in_ch) if preact else None
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is not None:
            x = self.bn(x)
        return self.fc(torch.flatten(x.mean((2, 3)), 1))  # (N, C, H, W) -> (N, C) -> (N, classes)


class ResNet(nn.Module):
    """Any of the four families under any sharing plan; build it with `sharenet.create_model`.

    `self.plan` (plan.py) says where every conv's kernel comes from; the stages are built from it.
    Under share="ring" the network owns the parameter ring, `self.ring`, which its stage convs read.
    """

    def __init__(self, arch: ArchSpec, plan: SharePlan, num_classes: int, in_chans: int = 3):
        super().__init__()
        self.arch, self.plan, self.share = arch, plan, plan.scheme
        self.config: dict = {}  # filled by create_model: what rebuilds this model from a file
        self.stem = Stem(arch.stem, in_chans, arch.stem_ch)
        ring = next((o for o in plan.owned() if o.size), None)
        self.ring = ParameterRing(ring.size, plan.sharing.ring_seed, plan.ring_total) if ring else None
        owners = {ring.path: self.ring} if ring else {}
        self.stages = nn.ModuleList(Stage(list(specs), plan, i, owners) for i, specs in enumerate(arch.stages))
        self.head = Head(arch.out_ch, num_classes, arch.preact_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ring is not None and torch.compiler.is_exporting():
            with self.ring.derived_in_graph():  # the file holds the ring and the seed's arithmetic, not the map
                return self._forward(x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def sharing_of(self, state_dict) -> Sharing | None:
        """The sharing (scheme and options) under which this architecture has these tensors, if any.

        A ring's seed is not in its shapes: a ring is taken to have this model's seed (weight files
        record theirs)."""
        found = recognise(self.arch, {k: tuple(v.shape) for k, v in state_dict.items()})
        if found is not None and found.scheme == "ring" and self.share == "ring":
            found = replace(found, ring_seed=self.plan.sharing.ring_seed)
        return found

    def no_weight_decay(self) -> set[str]:
        """Parameters the papers train without weight decay: template coefficients (Savarese & Maire)."""
        return {f"{s.path}.coefficients" for s in self.plan.slots if s.source == "templates"}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, but weights made for another sharing plan fail naming both plans.

        Where the tensors identify another plan (other keys, or other shapes: another template
        count or rank), a strict load would fail with a list of keys or sizes; the error names
        the two plans and the way to convert instead.
        """
        ours = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        if strict and self.config and {k: tuple(v.shape) for k, v in state_dict.items()} != ours:
            other = self.sharing_of(state_dict)
            if other is not None and other != self.plan.sharing:
                raise PlanMismatchError(
                    f"weights were made for {self.config['name']} {other.words()}, this model is "
                    f"{self.plan.sharing.words()}; load them into such a model, or convert them with "
                    "sharenet.load_weights(model, src, fuse_kernels=True)"
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
