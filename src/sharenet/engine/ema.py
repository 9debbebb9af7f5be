"""Exponential moving average of the weights, each distinct tensor updated once per step.

timm's ModelEmaV2/V3 walk state_dict(), where (in most implementations of sharing) a shared
kernel appears under every alias and so decays once per alias. Here the average walks
`parameters()`, which yields each tensor once, and a deepcopy keeps the ties of the copy.

The decay warms up as timm's ModelEmaV3 does (use_warmup): at step t it is
min(decay, 1 - (1 + t)^(-2/3)), 0.95 after 100 steps and 0.99 after 1,000. Without it a short
run's average still carries the random initial weights, and the BatchNorm statistics copied
from the live model fit neither (docs/design-notes.md has the run that showed it).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

WARMUP_POWER = 2 / 3  # timm ModelEmaV3's warmup_power (warmup_gamma 1)


def warmed_decay(decay: float, step: int, warmup: bool = True) -> float:
    """The decay applied after optimizer step `step` (0-based)."""
    return min(decay, 1 - (1 + step) ** -WARMUP_POWER) if warmup else decay


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - warmed_decay(self.decay, step, self.warmup))
        for ema_buf, buf in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buf.copy_(buf)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
