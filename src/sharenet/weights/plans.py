"""Recognising which sharing plan a set of weights was made for."""

from __future__ import annotations

import torch

from ..errors import InvalidArgumentError, PlanMismatchError


def keys_for(config: dict, share: str) -> set[str] | None:
    """state_dict keys of the model `config` describes under scheme `share` (None if invalid)."""
    from ..models import create_model

    try:
        with torch.device("meta"):
            return set(create_model(**{**config, "share": share}).state_dict())
    except InvalidArgumentError:
        return None


def source_scheme(config: dict, keys: set[str]) -> str | None:
    """The scheme whose state_dict keys equal `keys`, for the architecture in `config`."""
    from ..models import SCHEMES

    return next((s for s in SCHEMES if keys_for(config, s) == keys), None)


def check_plan_keys(model, state_dict) -> None:
    """Raise PlanMismatchError when `state_dict` fits this architecture under another scheme."""
    keys = set(state_dict)
    if keys == set(model.state_dict()):
        return
    other = source_scheme(model.config, keys)
    if other is not None and other != model.share:
        raise PlanMismatchError(
            f"weights were made for {model.config['name']} share={other!r}, this model is "
            f"share={model.share!r}; load them into a share={other!r} model, or fuse them with "
            f"sharenet.load_weights(model, src, fuse=True)"
        )
