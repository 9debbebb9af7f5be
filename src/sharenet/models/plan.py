"""The sharing plan: for every 3x3 conv of a network, where its kernel comes from.

A plan is data computed from (architecture, scheme, the scheme's options) alone, without building
a module. `Stage` builds the modules from it; accounting, `sharenet params --describe`, the
metadata of weight files, plan recognition, fusion, fitting and unshare all read it. Schemes:

- none: every conv owns its kernel.
- stage (ShaResNet, Boulch 2018): one kernel per stage; which 3x3 convs apply it depends on
  the family (RULES below: Boulch's ShaResNet code and Dai et al.'s paper).
- block (Dai et al. 2019): a block whose conv1 maps C->C applies one kernel in both 3x3 convs.
- templates (Savarese & Maire 2019, soft sharing): each stage owns a bank of `templates` kernels;
  every 3x3 conv of blocks 2..n applies its own learned mix of the bank (own coefficients).
- basis (Kang et al., deeply shared filter bases): every 3x3 conv of blocks 2..n becomes
  concat(own rank-u basis, the stage's shared rank-s basis) -> BatchNorm -> 1x1 coefficients;
  ranks scale with the stage width (x1, x2, x4 on CIFAR). "single": one shared basis per stage;
  "double": one per conv position (conv1s, conv2s).
- ring (RPG, Wang et al. 2023): every conv of the stages, 3x3 and 1x1 alike, reads its kernel
  from one flat vector of `ring_size` entries at the root of the network (ring.py); the slots
  record where each conv's entries start in the concatenation of all of them.
- stage_all: one kernel per stage for every 3x3 conv that maps C->C channels (conv1 and conv2 of
  every block but a stage's first conv1 on basic blocks): the fewest kernels a stage can have,
  the low end of the relaxed-sharing dial.
Relaxed sharing (`relax_rank` r > 0; stage, block, stage_all and ring): every conv that reads a
shared kernel S adds a low-rank correction of its own, W = S + B A with B (out, r) and A
(r, in*k*k), as Relaxed Recursive Transformers (Bae et al. 2025) and MiniViT do: r = 0 is hard
sharing, and each rank adds r * (out + in*k*k) parameters per conv, one dial from hard sharing
towards the unshared network.
The first block of a stage changes its shape (and under ShaResNet's basic-block rule is still
shared); the learned schemes leave it whole, as both papers do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from ..errors import InvalidArgumentError
from .blocks import BlockSpec
from .families import ArchSpec

SCHEMES = ("none", "stage", "block", "templates", "basis", "ring", "stage_all")
Source = Literal["own", "shared", "templates", "basis", "ring"]  # where a conv's kernel comes from
BASIS_KINDS = ("single", "double")
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm state, not parameters


@dataclass(frozen=True)
class Sharing:
    """What a user asks for: a scheme and its options (each option applies to one scheme)."""

    scheme: str = "none"
    templates: int = 2  # templates: kernels in each stage's bank (Savarese & Maire's s)
    shared_rank: int = 16  # basis: filters of the first stage's shared basis (x stage width / first width)
    unique_rank: int = 1  # basis: each conv's own filters in the first stage (scaled the same way)
    basis: str = "single"  # basis: one shared basis per stage, or one per conv position ("double")
    ring_size: int | None = None  # ring: its entries; None: one conv's worth (the largest kernel, RPG's default)
    ring_seed: int = 0  # ring: derives the map of ring entries and signs (ring.py), so a file rebuilds its kernels
    relax_rank: int = 0  # stage, block, stage_all, ring: rank of each sharing conv's own correction (0: hard)

    def options(self) -> dict:
        """The options that shape this scheme's model: what configs and weight files record. Rank 0 is
        hard sharing, recorded as the scheme alone (as every file made before relaxed sharing is)."""
        return {
            name: getattr(self, name)
            for name in OPTIONS.get(self.scheme, ())
            if name != "relax_rank" or self.relax_rank
        }

    def words(self) -> str:
        """ "share='templates', templates=2": the plan as create_model's keywords, for messages."""
        return ", ".join(f"{k}={v!r}" for k, v in {"share": self.scheme, **self.options()}.items())

    @classmethod
    def of(cls, config: dict) -> Sharing:
        """The sharing a model config (create_model's keywords) asks for; absent options: defaults."""
        return cls(config["share"], **{k: config[k] for k in OPTIONS.get(config["share"], ()) if k in config})


OPTIONS = {
    "stage": ("relax_rank",),
    "block": ("relax_rank",),
    "stage_all": ("relax_rank",),
    "templates": ("templates",),
    "basis": ("shared_rank", "unique_rank", "basis"),
    "ring": ("ring_size", "ring_seed", "relax_rank"),
}  # scheme -> its options
OPTION_NAMES = tuple(dict.fromkeys(name for names in OPTIONS.values() for name in names))  # every scheme's, once
RELAXABLE = tuple(s for s, names in OPTIONS.items() if "relax_rank" in names)  # the schemes relaxed sharing takes


@dataclass(frozen=True)
class Owned:
    """A tensor the plan places under the network, a stage or a block for several convs to use."""

    owner: str  # module path of the owner: "" (the network), "stages.1" or "stages.1.blocks.0"
    name: str  # its attribute there: "ring", "shared", "bank", "basis", "basis1", "basis2"
    in_ch: int
    out_ch: int  # a basis: its rank
    count: int = 0  # a bank: templates; 0 for a single kernel
    size: int = 0  # a ring: its entries (a flat vector); 0 otherwise

    @property
    def path(self) -> str:
        return f"{self.owner}.{self.name}" if self.owner else self.name

    @property
    def key(self) -> str:
        return f"{self.path}.templates" if self.count else f"{self.path}.weight"

    @property
    def shape(self) -> tuple[int, ...]:
        if self.size:
            return (self.size,)
        # a bank stacks its templates along the output channels: 4-D, so channels_last applies to it
        return (max(self.count, 1) * self.out_ch, self.in_ch, 3, 3)


@dataclass(frozen=True)
class ConvSlot:
    """One conv of a block (a 3x3; under the ring, 1x1s too) and the source of its kernel."""

    path: str  # module path, "stages.1.blocks.2.conv1" or "stages.1.blocks.0.shortcut.conv"
    in_ch: int
    out_ch: int
    stride: int
    norm: str | None  # the block's BatchNorm right after this conv, if any (folds a basis's bias)
    source: Source = "own"
    owned: Owned | None = None  # the shared kernel, bank, basis or ring it uses
    own_rank: int = 0  # basis: filters of its own basis
    kernel: int = 3  # kernel side
    offset: int = 0  # ring: where its entries start in the concatenation of every ring conv's
    rank: int = 0  # relaxed sharing: rank of its own correction B A of the kernel it reads

    @property
    def block(self) -> str:
        return ".".join(self.path.split(".")[:4])  # "stages.1.blocks.2"

    @property
    def name(self) -> str:
        return self.path[len(self.block) + 1 :]  # "conv1", "shortcut.conv"

    @property
    def numel(self) -> int:
        return self.out_ch * self.in_ch * self.kernel * self.kernel

    @property
    def reads_shared(self) -> bool:
        """It reads a kernel that other convs read too (a shared kernel or the ring): the convs that
        relaxed sharing corrects."""
        return self.source in ("shared", "ring")

    @property
    def fitted(self) -> bool:
        """A fit to unshared kernels replaces its kernel (any source but its own): the convs whose
        inputs a data-aware fit measures."""
        return self.source != "own"

    @property
    def max_rank(self) -> int:
        """The highest correction rank that adds anything: B (out, r) A (r, in*k*k) is already any
        kernel at min(out, in*k*k)."""
        return min(self.out_ch, self.in_ch * self.kernel**2)

    def tensors(self) -> dict[str, tuple[int, ...]]:
        """state_dict key -> shape of what this conv holds itself (shared tensors excluded)."""
        p = self.path
        if self.rank:  # relaxed sharing: the correction B (out, r) A (r, in*k*k) added to the shared kernel
            return {f"{p}.relax.a": (self.rank, self.in_ch * self.kernel**2), f"{p}.relax.b": (self.out_ch, self.rank)}
        if self.source == "own":
            return {f"{p}.weight": (self.out_ch, self.in_ch, self.kernel, self.kernel)}
        if self.source == "templates":
            return {f"{p}.coefficients": (self.owned.count,)}
        if self.source == "basis":
            rank = self.own_rank + self.owned.out_ch
            own = {f"{p}.basis.weight": (self.own_rank, self.in_ch, 3, 3)} if self.own_rank else {}
            norm = {f"{p}.bn.{n}": (rank,) for n in ("weight", "bias", "running_mean", "running_var")}
            return {**own, **norm, f"{p}.bn.num_batches_tracked": (), f"{p}.coeff.weight": (self.out_ch, rank, 1, 1)}
        return {}


# Which 3x3 slots of block i (spec) a scheme redirects, per block kind: ShaResNet (Boulch 2018), Dai et al.
# 2019, Savarese & Maire 2019 (templates) and Kang et al. (filter bases), as their code builds them.
Rule = Callable[[int, BlockSpec], tuple[str, ...]]


def every_block(*slots: str) -> Rule:
    """ShaResNet on post-activation basic blocks: the named slots of every block, the first included."""
    return lambda i, spec: slots


def after_first(*slots: str) -> Rule:
    """Blocks 2..n: the first block of a stage changes the shape and stays whole."""
    return lambda i, spec: slots if i > 0 else ()


def stride_one(*slots: str) -> Rule:
    """ShaResNet on v1.5 bottlenecks: every 3x3 applied with stride 1."""
    return lambda i, spec: slots if spec.stride == 1 else ()


def channel_preserving(i: int, spec: BlockSpec) -> tuple[str, ...]:
    """Dai et al.: both 3x3 convs share one kernel when conv1 maps C->C channels."""
    return ("conv1", "conv2") if spec.in_ch == spec.out_ch else ()


def every_c_to_c(i: int, spec: BlockSpec) -> tuple[str, ...]:
    """stage_all: every 3x3 conv of the block that maps C->C channels, whatever its stride."""
    return tuple(name for name, (i_ch, o_ch, k, *_) in spec.convs().items() if k == 3 and i_ch == o_ch)


RULES: dict[str, dict[str, Rule]] = {
    "basic": {
        "stage": every_block("conv2"),
        "block": channel_preserving,
        "templates": after_first("conv1", "conv2"),
        "basis": after_first("conv1", "conv2"),
        "stage_all": every_c_to_c,
    },
    "bottleneck": {"stage": stride_one("conv2"), "templates": after_first("conv2"), "stage_all": every_c_to_c},
    "preact_bottleneck": {"stage": after_first("conv2"), "templates": after_first("conv2"), "stage_all": every_c_to_c},
    "wide": {
        "stage": after_first("conv2"),
        "block": channel_preserving,
        "templates": after_first("conv1", "conv2"),
        "stage_all": every_c_to_c,
    },
}
WHY_NOT = {
    "block": "needs a block with two 3x3 convs, but {kind} blocks have one",
    "basis": "is defined (Kang et al.) for post-activation basic blocks (CIFAR ResNets, ResNet-18/34), not {kind}",
}


def check(sharing: Sharing) -> None:
    """Raise InvalidArgumentError for an unknown scheme or an option out of range."""
    if sharing.scheme not in SCHEMES:
        raise InvalidArgumentError(f"unknown sharing scheme {sharing.scheme!r}; valid: {', '.join(SCHEMES)}")
    lows = {"templates": 1, "shared_rank": 1, "unique_rank": 0, "ring_size": 1, "ring_seed": 0, "relax_rank": 0}
    for name, low in lows.items():
        value = getattr(sharing, name)
        if value is None and name == "ring_size":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidArgumentError(f"{name} must be an integer >= {low}, got {value!r}")
    if sharing.relax_rank and sharing.scheme not in RELAXABLE:
        raise InvalidArgumentError(f"relax_rank applies to share={', '.join(RELAXABLE)}, not share={sharing.scheme!r}")
    if sharing.basis not in BASIS_KINDS:
        raise InvalidArgumentError(f"basis must be one of {', '.join(BASIS_KINDS)}, got {sharing.basis!r}")


def check_scheme(scheme: str, kind: str) -> None:
    """Raise InvalidArgumentError for an unknown scheme or one the block kind cannot take."""
    check(Sharing(scheme))
    if scheme not in ("none", "ring") and scheme not in RULES[kind]:
        valid = ", ".join(["none", *RULES[kind], "ring"])
        raise InvalidArgumentError(
            f"share={scheme!r} {WHY_NOT[scheme].format(kind=kind)}; valid for this family: {valid}"
        )


def _owned(sharing: Sharing, slot: ConvSlot, stage: str, position: int, scale: int) -> Owned:
    """The tensor a redirected slot uses: whose it is, its name and its shape."""
    if sharing.scheme in ("stage", "stage_all"):
        return Owned(stage, "shared", slot.in_ch, slot.out_ch)
    if sharing.scheme == "block":
        return Owned(slot.block, "shared", slot.in_ch, slot.out_ch)
    if sharing.scheme == "templates":
        return Owned(stage, "bank", slot.in_ch, slot.out_ch, sharing.templates)
    name = "basis" if sharing.basis == "single" else f"basis{position + 1}"
    return Owned(stage, name, slot.in_ch, sharing.shared_rank * scale)


@dataclass(frozen=True)
class SharePlan:
    """Every 3x3 conv of one network with the source of its kernel, in module order."""

    sharing: Sharing
    slots: tuple[ConvSlot, ...]

    @property
    def scheme(self) -> str:
        return self.sharing.scheme

    def owned(self) -> list[Owned]:
        """The distinct shared tensors, in the order their first user appears."""
        return list(dict.fromkeys(s.owned for s in self.slots if s.owned is not None))

    @property
    def ring_total(self) -> int:
        """Kernel entries the ring convs read together (T); 0 without a ring."""
        return sum(s.numel for s in self.slots if s.source == "ring")

    def owned_by(self, owner: str) -> list[Owned]:
        return [o for o in self.owned() if o.owner == owner]

    def users(self, owned: Owned) -> list[ConvSlot]:
        return [s for s in self.slots if s.owned == owned]

    def block_slots(self, block: str) -> dict[str, ConvSlot]:
        """The slots of one block by name ("conv1", "conv2"; under the ring also "conv3", "shortcut.conv")."""
        return {s.name: s for s in self.slots if s.block == block}

    def groups(self) -> dict[str, list[str]]:
        """state_dict key of each shared tensor -> the convs that use it (weight files record this)."""
        return {o.key: [s.path for s in self.users(o)] for o in self.owned()}

    def tensors(self) -> dict[str, tuple[int, ...]]:
        """state_dict key -> shape of every tensor the 3x3 convs and their shared parts hold."""
        out = {o.key: o.shape for o in self.owned()}
        for slot in self.slots:
            out.update(slot.tensors())
        return out

    def params(self) -> int:
        """Parameters of those tensors (BatchNorm running statistics excluded), each counted once."""
        total = 0
        for key, shape in self.tensors().items():
            if not key.endswith(BUFFERS):
                n = 1
                for d in shape:
                    n *= d
                total += n
        return total


def make_plan(arch: ArchSpec, sharing: Sharing) -> SharePlan:
    """The plan of `arch` under `sharing`: the family's rule applied to every block of every stage."""
    check_scheme(sharing.scheme, arch.kind)
    check(sharing)  # the options (check_scheme sees the scheme alone)
    if sharing.scheme == "ring":
        return _ring_plan(arch, sharing)
    rule = RULES[arch.kind].get(sharing.scheme, lambda i, spec: ())
    first_width = arch.stages[0][0].width
    slots = []
    for si, specs in enumerate(arch.stages):
        stage, scale = f"stages.{si}", specs[0].width // first_width
        for bi, spec in enumerate(specs):
            picked = rule(bi, spec)
            for name, (in_ch, out_ch, k, stride, norm) in spec.convs().items():
                if k != 3:  # the hand-made and learned schemes share 3x3 kernels only
                    continue
                slot = ConvSlot(f"{stage}.blocks.{bi}.{name}", in_ch, out_ch, stride, norm)
                if name in picked:
                    owned = _owned(sharing, slot, stage, picked.index(name), scale)
                    own_rank = sharing.unique_rank * scale if sharing.scheme == "basis" else 0
                    slot = ConvSlot(slot.path, in_ch, out_ch, stride, norm, _SOURCE[sharing.scheme], owned, own_rank)
                slots.append(slot)
    plan = SharePlan(sharing, tuple(slots))
    if sharing.scheme != "none" and not plan.owned():
        raise InvalidArgumentError(
            f"share={sharing.scheme!r} shares no conv of this network: each stage has a single block, "
            "and this scheme leaves the first block of a stage whole"
        )
    _check_shapes(plan)
    return _relaxed(plan)


def _relaxed(plan: SharePlan) -> SharePlan:
    """The plan with a correction of rank `relax_rank` on every conv that reads a shared kernel or the
    ring; a rank that some conv cannot use (above its `max_rank`) is an error, not clipped, so that
    the count is what was asked for."""
    rank = plan.sharing.relax_rank
    if not rank:
        return plan
    slots = []
    for slot in plan.slots:
        if slot.reads_shared:
            if rank > slot.max_rank:
                raise InvalidArgumentError(
                    f"relax_rank={rank} is more than {slot.path} can use: its {slot.in_ch}->{slot.out_ch} "
                    f"{slot.kernel}x{slot.kernel} kernel has rank at most {slot.max_rank}"
                )
            slot = replace(slot, rank=rank)
        slots.append(slot)
    return replace(plan, slots=tuple(slots))


def ring_convs(arch: ArchSpec) -> list[ConvSlot]:
    """Every conv of the stages in module order, each with where its entries start (RPG's order)."""
    slots, offset = [], 0
    for si, specs in enumerate(arch.stages):
        for bi, spec in enumerate(specs):
            for name, (in_ch, out_ch, k, stride, norm) in spec.convs().items():
                slot = ConvSlot(f"stages.{si}.blocks.{bi}.{name}", in_ch, out_ch, stride, norm, kernel=k, offset=offset)
                slots.append(slot)
                offset += slot.numel
    return slots


def _ring_plan(arch: ArchSpec, sharing: Sharing) -> SharePlan:
    convs = ring_convs(arch)  # a ring larger than their entries is allowed (RPG rounds it up): some go unread
    size = max(s.numel for s in convs) if sharing.ring_size is None else sharing.ring_size
    sharing = replace(sharing, ring_size=size)
    ring = Owned("", "ring", 0, 0, size=size)
    slots = tuple(replace(s, source="ring", owned=ring) for s in convs)
    return _relaxed(SharePlan(sharing, slots))


_SOURCE: dict[str, Source] = {
    "stage": "shared",
    "block": "shared",
    "stage_all": "shared",
    "templates": "templates",
    "basis": "basis",
}


def _check_shapes(plan: SharePlan) -> None:
    paths: dict[str, Owned] = {}
    for owned in plan.owned():
        if paths.setdefault(owned.path, owned) != owned:
            shapes = sorted({paths[owned.path].shape, owned.shape})
            raise InvalidArgumentError(f"{plan.scheme} sharing would join convs of different shapes: {shapes}")


def recognise(arch: ArchSpec, shapes: dict[str, tuple[int, ...]]) -> Sharing | None:
    """The sharing under which `arch` holds exactly these 3x3 tensors (state_dict key -> shape), if any.

    Options are read off the shapes (a bank's template count, a basis's ranks); a candidate
    matches when every tensor of its plan is present with its shape and no tensor that only
    another candidate's plan has is present.
    """
    plans = []
    for sharing in _candidates(arch, shapes):
        try:
            plans.append(make_plan(arch, sharing))
        except InvalidArgumentError:  # options read off malformed shapes, or a scheme that shares nothing here
            continue
    every = {k for p in plans for k in p.tensors()}
    for plan in plans:
        mine = plan.tensors()
        present = all(k in shapes and tuple(shapes[k]) == v for k, v in mine.items())
        if present and not any(k in shapes for k in every - set(mine)):
            return plan.sharing
    return None


def _candidates(arch: ArchSpec, shapes: dict[str, tuple[int, ...]]) -> list[Sharing]:
    hard = ("none", "stage", "block", "stage_all")
    out = [Sharing(s) for s in hard if s == "none" or s in RULES[arch.kind]]
    if len(shapes.get("ring.weight", ())) == 1:  # the seed is not in the shapes: weight files record it
        out.append(Sharing("ring", ring_size=shapes["ring.weight"][0]))
    rank = next((shape[1] for key, shape in shapes.items() if key.endswith(".relax.b") and len(shape) == 2), 0)
    if rank:  # relaxed sharing: every correction has the same rank
        out = [replace(s, relax_rank=rank) for s in out if s.scheme != "none"]
    first_width = arch.stages[0][0].width
    for key, shape in shapes.items():
        if re.fullmatch(r"stages\.(\d+)\.bank\.templates", key) and len(shape) == 4:
            out.append(Sharing("templates", templates=shape[0] // shape[1]))  # (s * C, C, 3, 3): C -> C convs
            break
    for key, shape in shapes.items():
        if "basis" in RULES[arch.kind] and (m := re.fullmatch(r"stages\.(\d+)\.basis(1?)\.weight", key)):
            stage = int(m.group(1))
            if stage >= len(arch.stages) or len(shape) != 4:
                continue
            scale = arch.stages[stage][0].width // first_width
            own = next(
                (
                    v
                    for k, v in shapes.items()
                    if re.fullmatch(rf"stages\.{stage}\.blocks\.\d+\.conv\d\.basis\.weight", k)
                ),
                (0,),
            )
            kind = "double" if m.group(2) else "single"
            out.append(Sharing("basis", shared_rank=shape[0] // scale, unique_rank=own[0] // scale, basis=kind))
            break
    return out
