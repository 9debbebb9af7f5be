"""One training step (its loss: objective.py) and one evaluation pass: the loop around them is
loop.py, the set-up fit.py."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
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

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward, guard, update. Returns (loss, number correct) as tensors (no host sync)."""
        with autocast(self.device, self.dtype):
            logits = self.model(x)
            soft = self.objective.soft_targets(x)
        loss, objective = self.objective(logits, y, soft)
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


@torch.no_grad()
def evaluate(
    model: nn.Module, batches, device: torch.device, dtype: torch.dtype, num_classes: int, tta: bool = False
) -> dict:
    """Loss, top-1, top-5 and the confusion matrix over every sample of `batches` (all ranks).

    `tta`: each image's logits averaged with its horizontal flip's (two forward passes).
    """
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    top1 = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    seen = torch.zeros((), dtype=torch.int64, device=device)
    k = min(5, num_classes)
    for x, y in batches:
        with autocast(device, dtype):
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.topk(k, 1).indices
        top1 += (pred[:, 0] == y).sum()
        top5 += (pred == y[:, None]).any(1).sum()
        confusion += torch.bincount(y * num_classes + pred[:, 0], minlength=num_classes**2)
        seen += len(y)
    for t in (loss, top1, top5, confusion, seen):
        dist.all_reduce_sum(t)
    model.train(was_training)
    n = max(1, int(seen))
    return {
        "loss": float(loss) / n,
        "top1": int(top1) / n,
        "top5": int(top5) / n,
        "samples": int(seen),
        "confusion": confusion.view(num_classes, num_classes).cpu(),
    }
