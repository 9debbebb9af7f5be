"""BatchNorm + (residual add) + ReLU as one module, the normalisation of every block.

`BatchNormAct2d` subclasses `nn.BatchNorm2d`, so its parameters, buffers and state_dict keys are
BatchNorm's and peers' weights load unchanged; the residual add and the ReLU that follow a
BatchNorm in these networks live inside it, so that one kernel can do all three (fused.py). Which
kernel runs is the module's own setting, chosen when the model is prepared for the CPU fast path
(`use_fused_kernel`), and `print(model)` shows it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fused


def finish(out: torch.Tensor, residual: torch.Tensor | None, act: bool) -> torch.Tensor:
    """relu(out + residual), each part optional: what follows a normalisation in these blocks."""
    if residual is not None:
        out = out + residual
    return F.relu(out, inplace=True) if act else out


class BatchNormAct2d(nn.BatchNorm2d):
    """relu(BatchNorm(x) + residual); `act=False` drops the ReLU (a projection shortcut's BN)."""

    def __init__(self, num_features: int, act: bool = True, **kwargs):
        super().__init__(num_features, **kwargs)
        self.act = act
        self.kernel = "plain"  # "fused": the CPU kernel of fused.py in training mode, where it applies

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The BatchNorm proper; the cross-rank subclass reduces its statistics over ranks here."""
        return super().forward(x)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.kernel == "fused" and self.training and fused.applies(self, x, residual):
            return fused.bn_act(self, x, residual, self.act)
        return finish(self.normalize(x), residual, self.act)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, act={'relu' if self.act else 'none'}, kernel={self.kernel}"


def use_fused_kernel(model: nn.Module, on: bool = True) -> int:
    """Switch the model's BatchNormAct2d layers to the fused CPU kernel (or back); how many switched.

    Only exact BatchNormAct2d layers with affine parameters switch (a cross-rank subclass keeps its
    own statistics); none does when the kernel cannot be built here.
    """
    if on and not fused.load():
        return 0
    layers = [m for m in model.modules() if type(m) is BatchNormAct2d and m.affine]
    for m in layers:
        m.kernel = "fused" if on else "plain"
    return len(layers)
