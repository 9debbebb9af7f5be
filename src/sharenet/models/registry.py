"""Model names -> architectures: `create_model` and `list_models`, in the manner of timm."""

from __future__ import annotations

import re
from dataclasses import replace

from ..errors import InvalidArgumentError, UnknownModelError
from .budget import count_on_meta, ring_size_for, widest_for
from .families import IMAGENET_LAYOUTS, ArchSpec, cifar_resnet, imagenet_resnet, preact_resnet, wide_resnet
from .plan import OPTIONS, Sharing, check_scheme, make_plan
from .resnet import ResNet

NAMED = (
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
    "preact_resnet164",
    "preact_resnet1001",
    "wrn16_4",
    "wrn16_8",
    "wrn22_8",
    "wrn28_10",
    "wrn40_4",
    "wrn40_10",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
)
NAME_FORMS = (
    "resnet{6n+2} (CIFAR basic, e.g. resnet20), cifar_resnet{6n+2}, "
    "resnet{18,34,50,101,152} (ImageNet), preact_resnet{9n+2} (e.g. preact_resnet164), "
    "wrn{6n+4}_{k} (e.g. wrn28_10)"
)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names (any valid depth/width of each family is accepted too: see NAME_FORMS)."""
    return [n for n in NAMED if pattern is None or re.fullmatch(pattern.replace("*", ".*"), n)]


def _arch(name: str, shortcut: str | None, dropout: float, width: int | None = None) -> ArchSpec:
    """The architecture of a name; `width`: the first stage's channels (None: the family's own)."""
    given = {} if width is None else {"width": width}
    if m := re.fullmatch(r"(cifar_)?resnet(\d+)", name):
        depth = int(m.group(2))
        if not m.group(1) and depth in IMAGENET_LAYOUTS:
            if shortcut not in (None, "B"):
                raise InvalidArgumentError("ImageNet ResNets use shortcut 'B' (1x1 conv + BN) only")
            return imagenet_resnet(depth, **given)
        return cifar_resnet(depth, shortcut or "A", **given)
    if shortcut is not None:
        raise InvalidArgumentError(f"{name}: only CIFAR basic ResNets take a shortcut option")
    if m := re.fullmatch(r"preact_resnet(\d+)", name):
        return preact_resnet(int(m.group(1)), **given)
    if m := re.fullmatch(r"wrn(\d+)_(\d+)", name):
        return wide_resnet(int(m.group(1)), int(m.group(2)), dropout, **given)
    raise UnknownModelError(f"unknown model {name!r}; valid forms: {NAME_FORMS}")


def default_width(name: str) -> int:
    """The family's own width of a model name (16, 64, 16k)."""
    return _arch(name, None, 0.0).width


def create_model(
    name: str,
    *,
    share: str = "none",
    num_classes: int | None = None,
    in_chans: int = 3,
    shortcut: str | None = None,
    dropout: float = 0.0,
    width: int | None = None,
    params: int | None = None,
    templates: int | None = None,
    shared_rank: int | None = None,
    unique_rank: int | None = None,
    basis: str | None = None,
    ring_size: int | None = None,
    ring_seed: int | None = None,
) -> ResNet:
    """Build a model by name. `share`: "none", "stage" (ShaResNet), "block" (Dai et al.),
    "templates" (Savarese & Maire), "basis" (Kang et al.) or "ring" (RPG, Wang et al.).

    `shortcut` ("A" or "B") applies to CIFAR basic ResNets, `dropout` to Wide ResNets,
    `templates` to share="templates" (default 2), `shared_rank`, `unique_rank` (first-stage
    ranks, default 16 and 1) and `basis` ("single" or "double") to share="basis", `ring_size`
    (default: the largest conv's kernel entries) and `ring_seed` (default 0) to share="ring".
    `width`: the first stage's channels, the others in proportion (default the family's: 16 for
    CIFAR and pre-activation nets, 64 for ImageNet, 16k for WRN).
    `params`: a parameter budget. share="ring" gets the ring size that makes the count exactly
    `params`; every other scheme the widest network whose count is at most `params`. The model's
    `config` records what was chosen, so that it rebuilds without solving again (a config with
    both checks that they agree).
    """
    if not isinstance(name, str):
        raise UnknownModelError(f"model name must be a string, got {name!r}")
    if dropout and not name.startswith("wrn"):
        raise InvalidArgumentError(f"{name}: only Wide ResNets take dropout")
    arch = _arch(name, shortcut, dropout, width)
    check_scheme(share, arch.kind)
    sharing = _sharing(
        share,
        templates=templates,
        shared_rank=shared_rank,
        unique_rank=unique_rank,
        basis=basis,
        ring_size=ring_size,
        ring_seed=ring_seed,
    )
    num_classes = arch.default_classes if num_classes is None else num_classes
    for what, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(f"{what} must be a positive integer, got {value!r}")
    fixed = {"num_classes": num_classes, "in_chans": in_chans, "shortcut": shortcut, "dropout": dropout}
    if params is not None:
        arch, sharing = _meet_budget(name, params, arch, sharing, fixed, width)
    plan = make_plan(arch, sharing)
    model = ResNet(arch, plan, num_classes, in_chans)
    model.config = {"name": name, "share": share, **fixed, "width": arch.width, **plan.sharing.options()}
    if params is not None:
        model.config["params"] = params
    return model


def _meet_budget(name: str, params, arch: ArchSpec, sharing: Sharing, fixed: dict, width: int | None):
    """(arch, sharing) meeting the budget: the ring's size, or the widest width; checked where already given."""
    if not isinstance(params, int) or isinstance(params, bool) or params < 1:
        raise InvalidArgumentError(f"params must be a positive integer, got {params!r}")
    what = f"{name} {sharing.words()}"
    options = {k: v for k, v in sharing.options().items() if v is not None}

    def build(**chosen) -> ResNet:
        return create_model(name, share=sharing.scheme, **fixed, **{"width": width, **options, **chosen})

    if sharing.scheme == "ring":
        size = ring_size_for(params, build, what)
        if sharing.ring_size not in (None, size):
            raise InvalidArgumentError(
                f"ring_size={sharing.ring_size:,} gives {name} a count other than "
                f"params={params:,} (ring_size {size:,} does); give one of the two"
            )
        return arch, replace(sharing, ring_size=size)
    if width is not None:  # a recorded model: the width was chosen for this budget
        count = count_on_meta(build)  # on the meta device: draws no random numbers from the caller's stream
        if count > params:
            raise InvalidArgumentError(f"{what} at width {width} has {count:,} parameters, over params={params:,}")
        return arch, sharing
    return _arch(name, fixed["shortcut"], fixed["dropout"], widest_for(params, build, what)), sharing


def _sharing(share: str, **options) -> Sharing:
    """The Sharing asked for; an option given for another scheme is an error, not ignored."""
    given = {k: v for k, v in options.items() if v is not None}
    for option in given:
        if option not in OPTIONS.get(share, ()):
            owner = next(s for s, names in OPTIONS.items() if option in names)
            raise InvalidArgumentError(f"{option} applies to share={owner!r}, not share={share!r}")
    return Sharing(share, **given)
