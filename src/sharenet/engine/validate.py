"""Checks run before any work: value ranges, the model, and resume compatibility."""

from __future__ import annotations

import torch

from ..models import create_model
from .checkpoint import CheckpointError
from .config import Config, ConfigError

RANGES = {  # key: (lowest allowed, why)
    "optim.epochs": (1, "at least one epoch"),
    "optim.batch_size": (1, "a positive batch"),
    "optim.lr": (0.0, "a non-negative learning rate"),
    "optim.weight_decay": (0.0, "non-negative weight decay"),
    "optim.momentum": (0.0, "non-negative momentum"),
    "optim.warmup_steps": (0, "non-negative"),
    "optim.grad_clip": (0.0, "0 (off) or a positive norm"),
    "optim.label_smoothing": (0.0, "in [0, 1)"),
    "optim.ema_decay": (0.0, "0 (off) or in (0, 1)"),
    "run.max_steps": (0, "0 (no limit) or a positive count"),
    "run.checkpoint_every": (0, "0 (epoch ends only) or a positive count"),
    "run.keep_checkpoints": (1, "at least one"),
    "run.log_every": (1, "at least 1"),
    "run.eval_batch_size": (1, "a positive batch"),
    "data.crop_pad": (0, "non-negative"),
    "data.workers": (0, "non-negative"),
}
BELOW_ONE = ("optim.label_smoothing", "optim.ema_decay", "model.dropout", "optim.momentum")


def _get(cfg: Config, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def check_config(cfg: Config) -> None:
    for key, (low, why) in RANGES.items():
        if _get(cfg, key) < low:
            raise ConfigError(f"{key}={_get(cfg, key)!r} is invalid: needs {why}")
    for key in BELOW_ONE:
        if not 0 <= _get(cfg, key) < 1:
            raise ConfigError(f"{key}={_get(cfg, key)!r} must be in [0, 1)")
    m = cfg.model
    with torch.device("meta"):  # validates name, depth, scheme and options without allocating
        create_model(m.name, share=m.share, shortcut=m.shortcut, dropout=m.dropout)


# what must match for a checkpoint to continue a run (device, output, logging may change)
RESUME_KEYS = ("model", "optim")


def check_resume_compatible(cfg: Config, state: dict) -> None:
    saved, now = state.get("config", {}), cfg.to_dict()
    diffs = [
        f"{section}.{k}: {saved[section].get(k)!r} -> {v!r}"
        for section in RESUME_KEYS for k, v in now[section].items()
        if section in saved and _norm(saved[section].get(k)) != _norm(v)
    ]  # fmt: skip
    if saved.get("data", {}).get("dataset", cfg.data.dataset) != cfg.data.dataset:
        diffs.append(f"data.dataset: {saved['data']['dataset']!r} -> {cfg.data.dataset!r}")
    if diffs:
        raise CheckpointError("the checkpoint was made with another configuration: " + "; ".join(diffs))


def _norm(value):
    return list(value) if isinstance(value, tuple) else value
