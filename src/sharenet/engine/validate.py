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


# What must match for a checkpoint to continue a run: the shapes of the state it holds and the
# meaning of its step count. Other settings (lr, clipping, logging, device) may change on resume,
# which is how a run stopped by a non-finite loss is continued after the fix.
RESUME_KEYS = ("model.name", "model.share", "model.shortcut", "model.dropout", "data.dataset",
               "optim.batch_size", "optim.ema_decay", "optim.decay_norm_and_bias")  # fmt: skip


def check_resume_compatible(cfg: Config, state: dict) -> list[str]:
    """Raise for a checkpoint of another model/data/batch; return the settings that changed."""
    saved = state.get("config", {})
    now = cfg.to_dict()

    def value(tree, dotted):
        section, key = dotted.split(".")
        return _norm(tree.get(section, {}).get(key))

    changed = [
        f"{s}.{k}: {value(saved, f'{s}.{k}')!r} -> {_norm(v)!r}"
        for s in ("model", "data", "optim", "run") for k, v in now[s].items()
        if s in saved and value(saved, f"{s}.{k}") != _norm(v)
    ]  # fmt: skip
    fatal = [c for c in changed if c.split(":")[0] in RESUME_KEYS]
    if fatal:
        raise CheckpointError("the checkpoint was made with another configuration: " + "; ".join(fatal))
    return [c for c in changed if not c.startswith(("run.out", "run.progress", "data.data_dir", "run.device"))]


def _norm(value):
    return list(value) if isinstance(value, tuple) else value
