"""Model names -> architectures: `create_model` and `list_models`, in the manner of timm."""

from __future__ import annotations

import re

from ..errors import InvalidArgumentError, UnknownModelError
from .families import IMAGENET_LAYOUTS, ArchSpec, cifar_resnet, imagenet_resnet, preact_resnet, wide_resnet
from .plan import OPTIONS, Sharing, check_scheme, make_plan
from .resnet import ResNet

NAMED = (
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202",
    "preact_resnet164", "preact_resnet1001",
    "wrn16_4", "wrn16_8", "wrn22_8", "wrn28_10", "wrn40_4", "wrn40_10",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
)  # fmt: skip
NAME_FORMS = (
    "resnet{6n+2} (CIFAR basic, e.g. resnet20), cifar_resnet{6n+2}, "
    "resnet{18,34,50,101,152} (ImageNet), preact_resnet{9n+2} (e.g. preact_resnet164), "
    "wrn{6n+4}_{k} (e.g. wrn28_10)"
)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names (any valid depth/width of each family is accepted too: see NAME_FORMS)."""
    return [n for n in NAMED if pattern is None or re.fullmatch(pattern.replace("*", ".*"), n)]


def _arch(name: str, shortcut: str | None, dropout: float) -> ArchSpec:
    if m := re.fullmatch(r"(cifar_)?resnet(\d+)", name):
        depth = int(m.group(2))
        if not m.group(1) and depth in IMAGENET_LAYOUTS:
            if shortcut not in (None, "B"):
                raise InvalidArgumentError("ImageNet ResNets use shortcut 'B' (1x1 conv + BN) only")
            return imagenet_resnet(depth)
        return cifar_resnet(depth, shortcut or "A")
    if shortcut is not None:
        raise InvalidArgumentError(f"{name}: only CIFAR basic ResNets take a shortcut option")
    if m := re.fullmatch(r"preact_resnet(\d+)", name):
        return preact_resnet(int(m.group(1)))
    if m := re.fullmatch(r"wrn(\d+)_(\d+)", name):
        return wide_resnet(int(m.group(1)), int(m.group(2)), dropout)
    raise UnknownModelError(f"unknown model {name!r}; valid forms: {NAME_FORMS}")


def create_model(
    name: str,
    *,
    share: str = "none",
    num_classes: int | None = None,
    in_chans: int = 3,
    shortcut: str | None = None,
    dropout: float = 0.0,
    templates: int | None = None,
    shared_rank: int | None = None,
    unique_rank: int | None = None,
    basis: str | None = None,
) -> ResNet:
    """Build a model by name. `share`: "none", "stage" (ShaResNet), "block" (Dai et al.),
    "templates" (Savarese & Maire) or "basis" (Kang et al.).

    `shortcut` ("A" or "B") applies to CIFAR basic ResNets, `dropout` to Wide ResNets,
    `templates` to share="templates" (default 2), `shared_rank`, `unique_rank` (first-stage
    ranks, default 16 and 1) and `basis` ("single" or "double") to share="basis".
    """
    if not isinstance(name, str):
        raise UnknownModelError(f"model name must be a string, got {name!r}")
    if dropout and not name.startswith("wrn"):
        raise InvalidArgumentError(f"{name}: only Wide ResNets take dropout")
    arch = _arch(name, shortcut, dropout)
    check_scheme(share, arch.kind)
    sharing = _sharing(share, templates=templates, shared_rank=shared_rank, unique_rank=unique_rank, basis=basis)
    num_classes = arch.default_classes if num_classes is None else num_classes
    for what, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(f"{what} must be a positive integer, got {value!r}")
    model = ResNet(arch, make_plan(arch, sharing), num_classes, in_chans)
    model.config = {
        "name": name,
        "share": share,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "shortcut": shortcut,
        "dropout": dropout,
        **sharing.options(),
    }
    return model


def _sharing(share: str, **options) -> Sharing:
    """The Sharing asked for; an option given for another scheme is an error, not ignored."""
    given = {k: v for k, v in options.items() if v is not None}
    for option in given:
        if option not in OPTIONS.get(share, ()):
            owner = next(s for s, names in OPTIONS.items() if option in names)
            raise InvalidArgumentError(f"{option} applies to share={owner!r}, not share={share!r}")
    return Sharing(share, **given)
