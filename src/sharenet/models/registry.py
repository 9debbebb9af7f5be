"""Model names -> architectures: `create_model` and `list_models`, in the manner of timm."""

from __future__ import annotations

import re
from dataclasses import replace

from ..errors import InvalidArgumentError, UnknownModelError
from .budget import count_on_meta, ring_size_for, widest_for
from .families import IMAGENET_LAYOUTS, ArchSpec, cifar_resnet, imagenet_resnet, preact_resnet, wide_resnet
from .plan import OPTIONS, RELAXABLE, Sharing, check, check_scheme, make_plan
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
    relax_rank: int | str | None = None,
) -> ResNet:
    """Build a model by name. `share`: "none", "stage" (ShaResNet), "block" (Dai et al.),
    "templates" (Savarese & Maire), "basis" (Kang et al.), "ring" (RPG, Wang et al.) or
    "stage_all" (one kernel per stage for every C->C 3x3 conv).

    `shortcut` ("A" or "B") applies to CIFAR basic ResNets, `dropout` to Wide ResNets,
    `templates` to share="templates" (default 2), `shared_rank`, `unique_rank` (first-stage
    ranks, default 16 and 1) and `basis` ("single" or "double") to share="basis", `ring_size`
    (default: the largest conv's kernel entries) and `ring_seed` (default 0) to share="ring".
    `relax_rank` (stage, block, stage_all, ring): relaxed sharing, a correction B A of this rank
    on every conv that reads a shared kernel (default 0: hard sharing); "auto" with `params`:
    the largest rank within the budget.
    `width`: the first stage's channels, the others in proportion (default the family's: 16 for
    CIFAR and pre-activation nets, 64 for ImageNet, 16k for WRN).
    `params`: a parameter budget. share="ring" gets the ring size that makes the count exactly
    `params`; every other scheme the widest network whose count is at most `params`, or, with
    relax_rank="auto", the largest correction rank at the family's width. The model's
    `config` records what was chosen, so that it rebuilds without solving again (a config with
    both checks that they agree).
    """
    if not isinstance(name, str):
        raise UnknownModelError(f"model name must be a string, got {name!r}")
    if dropout and not name.startswith("wrn"):
        raise InvalidArgumentError(f"{name}: only Wide ResNets take dropout")
    arch = _arch(name, shortcut, dropout, width)
    check_scheme(share, arch.kind)
    auto_rank = relax_rank == "auto"
    if auto_rank and params is None:
        raise InvalidArgumentError('relax_rank="auto" chooses the rank that meets a budget: give params too')
    sharing = _sharing(
        share,
        templates=templates,
        shared_rank=shared_rank,
        unique_rank=unique_rank,
        basis=basis,
        ring_size=ring_size,
        ring_seed=ring_seed,
        relax_rank=0 if auto_rank and share != "ring" else relax_rank,
    )
    num_classes = arch.default_classes if num_classes is None else num_classes
    for what, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(f"{what} must be a positive integer, got {value!r}")
    fixed = {"num_classes": num_classes, "in_chans": in_chans, "shortcut": shortcut, "dropout": dropout}
    if auto_rank:
        sharing = _rank_for(name, params, sharing, fixed, width)
    elif params is not None:
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


def _rank_for(name: str, params, sharing: Sharing, fixed: dict, width: int | None) -> Sharing:
    """The largest correction rank whose network counts at most `params` (at the width given, or the
    family's): the count is linear in the rank, so two counts on the meta device solve it."""
    if not isinstance(params, int) or isinstance(params, bool) or params < 1:
        raise InvalidArgumentError(f"params must be a positive integer, got {params!r}")
    if sharing.scheme == "ring":
        raise InvalidArgumentError(
            'relax_rank="auto" does not apply to share="ring": give the rank, and params solves the ring size'
        )
    if sharing.scheme not in RELAXABLE:
        check(replace(sharing, relax_rank=1))  # names the schemes it applies to
    what = f"{name} share={sharing.scheme!r} with corrections"

    def count(rank: int) -> int:
        return count_on_meta(create_model, name=name, share=sharing.scheme, **fixed, width=width, relax_rank=rank)

    hard = count(0)
    if params < hard:
        raise InvalidArgumentError(f"params={params:,} is out of reach of {what}: rank 0 (hard sharing) has {hard:,}")
    most = min(s.max_rank for s in _shared_slots(name, sharing, fixed, width))
    per = count(1) - hard
    rank = (params - hard) // per
    if rank > most:
        raise InvalidArgumentError(
            f"params={params:,} is out of reach of {what}: the largest rank its convs can use ({most}) has "
            f"{hard + most * per:,}; give a wider network (width) or share less"
        )
    return replace(sharing, relax_rank=rank)


def _shared_slots(name: str, sharing: Sharing, fixed: dict, width: int | None):
    arch = _arch(name, fixed["shortcut"], fixed["dropout"], width)
    return [s for s in make_plan(arch, replace(sharing, relax_rank=0)).slots if s.reads_shared]


def _sharing(share: str, **options) -> Sharing:
    """The Sharing asked for; an option given for another scheme is an error, not ignored."""
    given = {k: v for k, v in options.items() if v is not None and not (k == "relax_rank" and v == 0)}
    for option in given:
        if option not in OPTIONS.get(share, ()):
            owners = ", ".join(repr(s) for s, names in OPTIONS.items() if option in names)
            raise InvalidArgumentError(f"{option} applies to share={owners}, not share={share!r}")
    return Sharing(share, **given)
