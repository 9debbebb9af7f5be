"""Moving weights between layouts and sharing plans: load_weights, fusion, unshare.

Conversions go through the canonical unshared layout: every conv with its own kernel. A model
under any plan expands to it (`unshare`): hard-shared and template kernels exactly, filter-basis
convs folded into one kernel each (exact in eval mode, where their BatchNorm is affine). It
converts back by fitting each shared tensor of the target plan to the kernels it replaces
(`fuse`, see fit.py), with a report of each conv's relative reconstruction error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InvalidArgumentError, PlanMismatchError, WeightsError
from ..models import ResNet, create_model
from ..models.plan import OPTION_NAMES, Sharing
from ..models.registry import default_width
from . import fit
from .calibration import in_batches, input_covariances
from .files import read_safetensors
from .peers import detect_layout, to_sharenet, unwrap


@dataclass
class LoadReport:
    """What load_weights did: layouts, plans, and per fused kernel the sources' relative distance."""

    layout: str
    source_share: str
    target_share: str
    fused: dict[str, dict[str, float]] = field(default_factory=dict)  # shared key -> conv -> ||fit-src||/||src||

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
    """The model's weights in the unshared layout: every 3x3 conv with the kernel it applies as its own.

    A filter-basis conv folds into one kernel plus a bias, which the BatchNorm after it absorbs
    into its running mean: exact in eval mode. Where no BatchNorm follows, there is no
    equivalent plain network and this raises InvalidArgumentError.
    """
    state = dict(model.state_dict())
    for key in model.plan.groups():
        del state[key]
    for slot in model.plan.slots:
        if slot.source == "own":
            continue
        conv = model.get_submodule(slot.path)
        for key in slot.tensors():
            del state[key]
        if slot.source != "basis":
            state[f"{slot.path}.weight"] = conv.kernel().detach()
            continue
        if slot.norm is None:
            raise InvalidArgumentError(
                f"{slot.path}: a filter-basis conv with no BatchNorm after it has no plain equivalent"
            )
        kernel, bias = conv.fold()
        state[f"{slot.path}.weight"] = kernel
        mean = f"{slot.block}.{slot.norm}.running_mean"
        state[mean] = state[mean] - bias
    return state


def unshare(model: ResNet) -> ResNet:
    """The equivalent share="none" model, every conv with its own kernel copy: same outputs
    (for filter bases, in eval mode: their batch statistics in training have no plain equivalent)."""
    plain = create_model(**{k: v for k, v in model.config.items() if k not in _OPTIONS}, share="none")
    param = next(model.parameters())
    plain.to(device=param.device, dtype=param.dtype)
    plain.load_state_dict({k: v.clone() for k, v in unshared_state_dict(model).items()})
    return plain.train(model.training)


_OPTIONS = ("share", "params", *OPTION_NAMES)  # the config keys that choose the plan (and a budget)


def fuse(
    model: ResNet, unshared: dict[str, torch.Tensor], covariances: dict[str, torch.Tensor] | None = None
) -> dict[str, dict[str, float]]:
    """Load unshared weights into a model of any plan, fitting each shared tensor (and, under
    relaxed sharing, each conv's correction) to the kernels it replaces (fit.py); returns, per
    shared tensor, each conv's relative reconstruction error, after its correction.

    `covariances` (conv path -> second moment of its input patches, calibration.py): fit the
    convs' outputs on those inputs instead of their weights, under every plan."""
    plan, current = model.plan, model.state_dict()
    state, report = {}, {}
    for owned in plan.owned():
        slots = plan.users(owned)
        kernels = [_take(unshared, f"{s.path}.weight").double() for s in slots]
        if slots[0].source == "ring":
            seed = plan.sharing.ring_seed
            fitted, report[owned.key] = fit.ring(owned, slots, kernels, seed, current[owned.key].cpu(), covariances)
            applied = fit.ring_kernels(owned, slots, fitted[owned.key], seed)
        elif slots[0].source == "templates":
            fitted, report[owned.key] = fit.template_bank(owned, slots, kernels, current[owned.key].cpu(), covariances)
        elif slots[0].source == "basis":
            eps = model.get_submodule(f"{slots[0].path}.bn").eps
            fitted, report[owned.key] = fit.filter_basis(owned, slots, kernels, eps, covariances)
        else:
            fitted, report[owned.key] = fit.mean_kernel(owned, slots, kernels, covariances)
            applied = [fitted[owned.key]] * len(slots)
        state.update(fitted)
        if plan.sharing.relax_rank:
            relaxed, report[owned.key] = fit.corrections(slots, kernels, applied, covariances)
            state.update(relaxed)
    for key in current:
        if key not in state:
            state[key] = _take(unshared, key)
    model.load_state_dict(state)
    return report


def _take(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise WeightsError(f"source weights lack {key!r}: they were made for another architecture")
    return state[key]


def load_weights(
    model: ResNet, src, *, fuse_kernels: bool = False, calibration: torch.Tensor | None = None
) -> LoadReport:
    """Load weights (path or state dict) into `model`: sharenet's, torchvision's, the common CIFAR
    ResNet layout, Kang et al.'s Net_RL2 (filter bases) or Savarese & Maire's SWRN (templates).

    Weights for the same plan load exactly. Weights for another plan raise PlanMismatchError
    naming both, unless `fuse_kernels=True`: then each shared tensor of the model is fitted to the
    source's kernels it replaces (see `LoadReport.fused`), or they are expanded into an unshared model.
    `calibration` (preprocessed images, N x C x H x W, a few thousand): fit each conv's outputs on
    the inputs the source network gives it on those images instead of its weights (the data-aware
    fit of weights/fit.py; `LoadReport.fused` then holds relative errors of the outputs).
    """
    state, meta = read_state(src)
    layout = detect_layout(state)
    state = to_sharenet(state, layout)
    if meta:
        src_config = meta["config"]
    else:
        sharing = model.sharing_of(state)  # peers with learned sharing (netrl2, soft-sharing) included
        plain = {k: v for k, v in model.config.items() if k not in _OPTIONS}
        if sharing is not None:
            src_config = {**plain, "share": sharing.scheme, **sharing.options()}
        else:  # fits no plan of this architecture: the strict load below names the keys
            src_config = model.config if layout == "sharenet" else {**plain, "share": "none"}
    report = LoadReport(layout, src_config["share"], model.share)
    if _same_model(src_config, model.config):
        _strict_load(model, state)
        return report
    if not fuse_kernels:
        theirs, ours = (f"{c.get('name', '')} {Sharing.of(c).words()}".strip() for c in (src_config, model.config))
        raise PlanMismatchError(
            f"weights were made for {theirs}, this model is {ours}; "
            "pass fuse_kernels=True (CLI: sharenet import) to fit the shared tensors to the kernels they replace"
        )
    source = create_model(**src_config)
    _strict_load(source, state)
    covariances = None
    if calibration is not None:
        paths = [s.path for s in model.plan.slots if s.fitted]
        batches = in_batches(calibration.to(next(source.parameters()).dtype))
        covariances = input_covariances(source.eval(), paths, batches)
    report.fused = fuse(model, unshared_state_dict(source), covariances)
    return report


def _same_model(a: dict, b: dict) -> bool:
    """Two model configs build the same tensors: name, width (absent: the family's) and sharing."""
    widths = [c.get("width") or default_width(c["name"]) for c in (a, b)]
    keys = ("name", "share", *OPTION_NAMES)
    return widths[0] == widths[1] and all(a.get(k) == b.get(k) for k in keys)


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
