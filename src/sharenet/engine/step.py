"""One training step (its loss: objective.py; the evaluation pass: evaluation.py): the loop around
it is loop.py, the set-up fit.py."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import SharenetError
from . import distributed as dist
from .device import autocast
from .ema import WeightEMA
from .fastpath import FastPath
from .objective import Objective


class NonFiniteError(SharenetError):
    """A NaN or infinite loss or gradient norm: the step was not applied."""

    exit_code = 1


@dataclass(kw_only=True)
class Trainer:
    model: nn.Module  # possibly DDP-wrapped or compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    dtype: torch.dtype
    objective: Objective = field(default_factory=Objective)
    grad_clip: float = 0.0
    ema: WeightEMA | None = None
    scaler: torch.amp.GradScaler | None = None
    fast: FastPath | None = None  # what the step runs with on this machine, for the run's records
    trained_on: torch.Tensor | None = None  # the last step's objective (labels, distillation, penalty)

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward, guard, update. Returns (loss, number correct) as tensors (no host sync)."""
        with autocast(self.device, self.dtype):
            logits = self.model(x)
            soft = self.objective.soft_targets(x)
        loss, objective = self.objective(logits, y, soft)
        self.trained_on = objective.detach()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(objective).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            objective.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else math.inf)
        if self.scaler is None and not bool(torch.isfinite(objective) & torch.isfinite(norm)):
            raise NonFiniteError(
                f"non-finite {'loss' if not torch.isfinite(objective) else 'gradient norm'} at step {step + 1}; "
                "the step was not applied and the last checkpoint is kept (lower the lr or enable grad_clip, "
                "then --resume)"
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(dist.unwrap(self.model), step)
        return loss.detach(), (logits.argmax(1) == y).sum()
