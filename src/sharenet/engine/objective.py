"""What a training step minimises: one object of terms, built once by set-up, so that the step
never asks which terms there are.

The labels' cross-entropy (with label smoothing) is the loss a step logs, comparable across runs;
a teacher's distillation term reweighs it (Hinton et al., below) and the bases' orthogonality
penalty adds to it. Under distillation the whole objective is logged beside it
(`distil_objective` in metrics.jsonl, and so in TensorBoard).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..models import basis_penalty
from .config import Config
from .fastpath import FastPath


class Distillation:
    """Hinton et al.'s term (distil.py has the teacher and the student's start); the teacher is frozen."""

    def __init__(self, teacher: nn.Module, alpha: float, temperature: float):
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)

    def objective(self, ce: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """(1 - alpha) ce + alpha T^2 KL(softmax(teacher / T) || softmax(student / T)), batch mean."""
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(student.float() / t, 1),
            F.log_softmax(teacher.float() / t, 1),
            reduction="batchmean",
            log_target=True,
        )
        return (1 - self.alpha) * ce + self.alpha * t * t * soft

    def on_fast_path(self, device: torch.device, fast: FastPath) -> Distillation:
        """The term with its teacher as the student's steps run: on the device, in their memory format,
        compiled with them."""
        model = self.teacher.to(device)
        if fast.channels_last:
            model.to(memory_format=torch.channels_last)
        return Distillation(torch.compile(model) if fast.compile else model, self.alpha, self.temperature)


@dataclass(frozen=True, kw_only=True)
class Objective:
    label_smoothing: float = 0.0
    distillation: Distillation | None = None  # a frozen teacher's term (distil.py)
    penalty: Callable[[], torch.Tensor] | None = None  # the bases' orthogonality term

    def soft_targets(self, x: torch.Tensor) -> torch.Tensor | None:
        """What the terms read from the step's images besides the labels (the teacher's logits), run
        under the step's autocast beside the student's forward pass."""
        return self.distillation.teacher_logits(x) if self.distillation is not None else None

    def __call__(
        self, logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss logged: the labels' cross-entropy, the objective minimised)."""
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        objective = loss if soft is None else self.distillation.objective(loss, logits, soft)
        if self.penalty is not None:
            objective = objective + self.penalty()
        return loss, objective

    def on_fast_path(self, device: torch.device, fast: FastPath) -> Objective:
        """A term that runs a network (the teacher) runs it as the student's steps do."""
        if self.distillation is None:
            return self
        return replace(self, distillation=self.distillation.on_fast_path(device, fast))


def build_objective(cfg: Config, model: nn.Module, distillation: Distillation | None = None) -> Objective:
    """The run's objective: labels with cfg's smoothing, the orthogonality penalty of a model that
    shares filter bases (when weighted), and `distillation` when a teacher is there."""
    o = cfg.optim
    penalty = (
        partial(basis_penalty, model, o.ortho_own, o.ortho_penalty)
        if o.ortho_penalty and model.share == "basis"
        else None
    )
    return Objective(label_smoothing=o.label_smoothing, distillation=distillation, penalty=penalty)
