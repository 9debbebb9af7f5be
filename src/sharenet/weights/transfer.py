"""Moving weights between layouts and sharing plans: load_weights, fusion, unshare.

Conversions go through the canonical unshared layout: every conv with its own kernel. A shared
model expands to it losslessly (`unshare`); it fuses back by averaging the kernels a shared one
replaces (`fuse`), with a report of how far each source kernel was from that mean.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import PlanMismatchError, WeightsError
from ..models import ResNet, create_model, share_groups
from .files import read_safetensors
from .peers import detect_layout, to_sharenet, unwrap


@dataclass
class LoadReport:
    """What load_weights did: layouts, plans, and per fused kernel the sources' relative distance."""

    layout: str
    source_share: str
    target_share: str
    fused: dict[str, dict[str, float]] = field(default_factory=dict)  # kernel key -> conv -> ||mean-src||/||src||

    @property
    def max_distance(self) -> float:
        return max((d for conv in self.fused.values() for d in conv.values()), default=0.0)


def read_state(src) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A state dict (and sharenet metadata) from a dict, a .safetensors file or a torch pickle."""
    if isinstance(src, dict):
        return unwrap(src), None
    path = Path(os.fspath(src))
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # never an unrestricted unpickler
    except Exception as e:  # torch raises many types for truncated, foreign or unsafe pickles
        raise WeightsError(f"checkpoint {path} cannot be read safely: {str(e).splitlines()[0]}") from None
    return unwrap(obj), None


def unshared_state_dict(model: ResNet) -> dict[str, torch.Tensor]:
    """The model's weights in the unshared layout: each borrowing conv gets its kernel as its own."""
    state = dict(model.state_dict())
    for kernel_key, convs in share_groups(model).items():
        kernel = state.pop(kernel_key)
        state.update({f"{conv}.weight": kernel for conv in convs})
    return state


def unshare(model: ResNet) -> ResNet:
    """The equivalent share="none" model: same outputs, every conv with its own kernel copy."""
    plain = create_model(**{**model.config, "share": "none"})
    param = next(model.parameters())
    plain.to(device=param.device, dtype=param.dtype)
    plain.load_state_dict({k: v.clone() for k, v in unshared_state_dict(model).items()})
    return plain.train(model.training)


def fuse(model: ResNet, unshared: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Load unshared weights into a shared model: each shared kernel is the mean of those it replaces."""
    groups = share_groups(model)
    state, report = {}, {}
    for key in model.state_dict():
        if key not in groups:
            state[key] = _take(unshared, key)
            continue
        sources = {conv: _take(unshared, f"{conv}.weight").float() for conv in groups[key]}
        mean = torch.stack(list(sources.values())).mean(0)
        state[key] = mean
        report[key] = {conv: float((mean - s).norm() / s.norm().clamp_min(1e-12)) for conv, s in sources.items()}
    model.load_state_dict(state)
    return report


def _take(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise WeightsError(f"source weights lack {key!r}: they were made for another architecture")
    return state[key]


def load_weights(model: ResNet, src, *, fuse_kernels: bool = False) -> LoadReport:
    """Load sharenet, torchvision or CIFAR-layout weights (path or state dict) into `model`.

    Weights for the same plan load exactly. Weights for another plan raise PlanMismatchError
    naming both, unless `fuse_kernels=True`: then shared kernels become the mean of the source
    kernels they replace (see `LoadReport.fused`), or are expanded exactly into an unshared model.
    """
    state, meta = read_state(src)
    layout = detect_layout(state)
    state = to_sharenet(state, layout)
    if meta:
        src_config = meta["config"]
    else:
        scheme = model.scheme_of(state) if layout == "sharenet" else "none"
        src_config = {**model.config, "share": scheme or model.share}
    report = LoadReport(layout, src_config["share"], model.share)
    if src_config["share"] == model.share and src_config.get("name", model.config["name"]) == model.config["name"]:
        _strict_load(model, state)
        return report
    if not fuse_kernels:
        raise PlanMismatchError(
            f"weights were made for share={src_config['share']!r}, this model is share={model.share!r}; "
            "pass fuse_kernels=True (CLI: sharenet import) to average the kernels a shared one replaces"
        )
    source = create_model(**src_config)
    _strict_load(source, state)
    report.fused = fuse(model, unshared_state_dict(source))
    return report


def _strict_load(model: ResNet, state: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        ours = set(model.state_dict())
        missing, unexpected = sorted(ours - set(state)), sorted(set(state) - ours)
        detail = f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
        if not missing and not unexpected:
            detail = str(e).splitlines()[-1].strip()
        raise WeightsError(f"weights do not fit {model.config['name']}: {detail}") from None
