"""Checks run before any work: value ranges, the model, and resume compatibility.

Bounds and what a checkpoint must match are declared with each key in config.py (`KEYS`).
"""

from __future__ import annotations

import math

from ..models import create_model, zero_init_residual
from ..models.budget import count_on_meta
from ..models.plan import OPTION_NAMES, OPTIONS, RELAXABLE
from .checkpoint import CheckpointError
from .config import KEYS, Config, ConfigError, stored_value


def _get(cfg: Config, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def check_config(cfg: Config) -> None:
    for k in KEYS.values():
        value = _get(cfg, k.name)
        if isinstance(value, float) and not math.isfinite(value):  # nan passes every comparison below
            valid = f"a finite number {k.bounds}" if k.bounds else "a finite number"
            raise ConfigError(f"{k.name}={value!r} is invalid: needs {valid}")
        if value is None:  # an optional key left to its rule (model.width, ...)
            continue
        if k.above is not None and value <= k.above:
            raise ConfigError(f"{k.name}={value!r} is invalid: needs {k.need or k.bounds}")
        if k.low is None:
            continue
        ranged = k.below is not None or k.high is not None
        if value < k.low and (k.need or not ranged):
            need = k.need or ("non-negative" if k.low == 0 else f"at least {k.low:g}")
            raise ConfigError(f"{k.name}={value!r} is invalid: needs {need}")
        below = k.below is None or value < k.below
        if not (k.low <= value and below and (k.high is None or value <= k.high)):
            raise ConfigError(f"{k.name}={value!r} must be in {k.bounds}")
    d = cfg.distil
    if d.fit and not d.teacher:
        raise ConfigError("distil.fit=true fits the student to a teacher: set distil.teacher=PATH too")
    m = cfg.model
    if m.relax_rank != 0 and m.share not in RELAXABLE:
        raise ConfigError(f"model.relax_rank applies to share={', '.join(RELAXABLE)}, not model.share={m.share}")
    if m.relax_rank is None and m.params is None:
        raise ConfigError("model.relax_rank=none chooses the rank that meets model.params: set model.params too")
    # a budget depends on the data's classes and channels: it is solved when the model is built; here
    # name, depth, scheme and options, and how many residual scales model.zero_init_residual would zero
    kwargs = {**m.create_kwargs(), "params": None}
    if kwargs.get("relax_rank") == "auto":
        kwargs["relax_rank"] = 0
    zeroed = count_on_meta(create_model, count=zero_init_residual, name=m.name, **kwargs)
    if m.zero_init_residual and not zeroed:
        raise ConfigError(
            f"model.zero_init_residual=true does not apply to {m.name}: its pre-activation blocks "
            "end in a conv, with no BatchNorm before the residual add; set it to false"
        )


def check_resume_compatible(cfg: Config, state: dict) -> list[str]:
    """Raise for a checkpoint of another model/data/batch; return the settings that changed.

    Only keys declared resume=True must match (the shapes of the state a checkpoint holds and the
    meaning of its step count); others may change, which is how a run stopped by a non-finite loss
    is continued after the fix. Changes of local keys (paths, device, progress bar) go unreported.
    A key missing from an older checkpoint's config counts as its default.
    """
    saved = state.get("config", {})
    now = cfg.to_dict()

    pairs = [
        (k, stored_value(saved, k.name), stored_value(now, k.name))
        for k in KEYS.values()
        if k.name.split(".")[0] in saved
    ]
    changed = [
        (k, f"{k.name}: {was!r} -> {is_!r}")
        for k, was, is_ in pairs
        if was != is_ and not _solved_again(k.name, is_, cfg)
    ]
    fatal = [text for k, text in changed if k.resume and not _unused_option(k.name, cfg.model.share)]
    if fatal:
        raise CheckpointError("the checkpoint was made with another configuration: " + "; ".join(fatal))
    return [text for k, text in changed if not k.local]


def _solved_again(name: str, value, cfg: Config) -> bool:
    """A width or ring size left to the budget now (None), recorded as solved: the same model.params
    (a resume=True key, compared on its own) solves to the same value."""
    solved = ("model.width", "model.ring_size", "model.relax_rank")
    return name in solved and value is None and cfg.model.params is not None


def _unused_option(name: str, share: str) -> bool:
    """A scheme option (model.templates, model.shared_rank, ...) of a scheme other than this run's:
    it shapes nothing in the checkpoint, so a change of it does not stop a resume."""
    section, key = name.split(".")
    return section == "model" and key in OPTION_NAMES and key not in OPTIONS.get(share, ())
