"""Optimizer and learning-rate schedule from an OptimConfig.

Parameter groups come from `named_parameters()`, which yields a shared kernel once: a kernel
used by many convs is in exactly one group and stepped once (walking blocks would list it in
several). The schedule is a pure function of the optimizer step, so resuming restores it exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    decay, no_decay = [], []
    never = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()  # template coefficients
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        flat = p.ndim <= 1 and name != "ring.weight"  # the ring is 1-D but holds every stage conv's kernel
        exempt = name in never or (not cfg.decay_norm_and_bias and (flat or name.endswith(".bias")))
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def base_lr(cfg: OptimConfig) -> float:
    return cfg.lr * cfg.batch_size / cfg.lr_reference_batch if cfg.lr_reference_batch else cfg.lr


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    nesterov = cfg.nesterov and cfg.momentum > 0
    return torch.optim.SGD(
        param_groups(model, cfg), lr=base_lr(cfg), momentum=cfg.momentum, nesterov=nesterov, foreach=True
    )


def lr_factor(step: int, cfg: OptimConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    elif cfg.schedule == "multistep":
        epoch = step // steps_per_epoch
        factor = cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    else:
        factor = 1.0
    if step < cfg.warmup_steps:
        ramp = (
            cfg.warmup_factor
            if cfg.warmup_mode == "constant"
            else (cfg.warmup_factor + (1 - cfg.warmup_factor) * step / cfg.warmup_steps)
        )
        factor *= ramp
    return factor


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg, steps_per_epoch))


def reapply_settings(opt: torch.optim.Optimizer, sched, cfg: OptimConfig, steps_per_epoch: int) -> None:
    """After loading a checkpoint's optimizer state, apply this run's hyper-parameters.

    load_state_dict restores the saved lr, momentum and decay; a resumed run may have changed them
    (say, a lower lr after a non-finite loss). Momentum buffers and the step count are kept.
    """
    lr = base_lr(cfg)
    for i, group in enumerate(opt.param_groups):
        group.update(
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            initial_lr=lr,
            weight_decay=cfg.weight_decay if i == 0 else 0.0,
        )
        group["lr"] = lr * lr_factor(sched.last_epoch, cfg, steps_per_epoch)
    sched.base_lrs = [lr] * len(opt.param_groups)
