"""Key mappings from peer checkpoint layouts to sharenet's layout.

One rule table per peer, read by `to_sharenet`; peer names stop here.

- torchvision: ImageNet ResNets (conv1, bn1, layer1..4.{i}.{conv,bn}{1,2,3}, downsample, fc).
- cifar: the CIFAR-ResNet layout of popular repositories (the same, with `linear` as the head).
- netrl2: Kang et al.'s Net_RL2 ResNets with shared filter bases, CIFAR and ILSVRC: a stage's
  `shared_basis_{g}` (single) or `shared_basis_{g}_{1,2}` (double), and in blocks 2..n
  `basis_conv{k}` (own basis), `basis_bn{k}`, `coeff_conv{k}` -> our `conv{k}.basis/bn/coeff`.
- soft-sharing: Savarese & Maire's SWRN: `conv_3x3` stem, a stage's `bank_{g}.templates`
  (s, C, C, 3, 3) -> ours stacked (s * C, C, 3, 3), per shared conv `coefficients`
  (s, 1, 1, 1, 1) -> our (s,), `lastact.0` and `classifier` head.

Both learned-sharing peers register the shared module under every block that uses it too, so
their state dicts repeat each shared tensor under alias keys. sharenet keeps one key per tensor:
the aliases are dropped, after checking that each equals the tensor it repeats (an alias that
differs means the file was edited or mis-assembled, and no single model reproduces it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import WeightsError

_STAGE, _BLOCK = r"(?P<g>\d+)", r"(?P<g>\d+)\.(?P<i>\d+)\."  # g: the peer's 1-based stage number


@dataclass(frozen=True)
class Peer:
    """How one peer names its tensors. Rules are tried in order; the first full match renames."""

    rules: tuple[tuple[str, str], ...]  # peer key pattern -> sharenet key ({s}: 0-based stage)
    aliases: tuple[tuple[str, str], ...] = ()  # alias key pattern -> the peer key it repeats
    reshape: tuple[tuple[str, Callable], ...] = ()  # sharenet key suffix -> peer tensor to our shape


_RESNET = (  # stem, blocks and shortcuts as torchvision names them; the head differs per peer
    (r"conv1\.(?P<t>.+)", "stem.conv.{t}"),
    (r"bn1\.(?P<t>.+)", "stem.bn.{t}"),
    (rf"layer{_BLOCK}(?:downsample|shortcut)\.0\.(?P<t>.+)", "stages.{s}.blocks.{i}.shortcut.conv.{t}"),
    (rf"layer{_BLOCK}(?:downsample|shortcut)\.1\.(?P<t>.+)", "stages.{s}.blocks.{i}.shortcut.bn.{t}"),
    (rf"layer{_BLOCK}(?P<t>.+)", "stages.{s}.blocks.{i}.{t}"),
)
_FC = ((r"fc\.(?P<t>.+)", "head.fc.{t}"),)

PEERS = {
    "torchvision": Peer((*_RESNET, *_FC)),
    "cifar": Peer((*_RESNET, (r"linear\.(?P<t>.+)", "head.fc.{t}"))),
    "netrl2": Peer(
        (
            (rf"shared_basis_{_STAGE}\.(?P<t>.+)", "stages.{s}.basis.{t}"),
            (rf"shared_basis_{_STAGE}_(?P<k>\d)\.(?P<t>.+)", "stages.{s}.basis{k}.{t}"),
            (rf"layer{_BLOCK}basis_conv(?P<k>\d)\.(?P<t>.+)", "stages.{s}.blocks.{i}.conv{k}.basis.{t}"),
            (rf"layer{_BLOCK}basis_bn(?P<k>\d)\.(?P<t>.+)", "stages.{s}.blocks.{i}.conv{k}.bn.{t}"),
            (rf"layer{_BLOCK}coeff_conv(?P<k>\d)\.(?P<t>.+)", "stages.{s}.blocks.{i}.conv{k}.coeff.{t}"),
            *_RESNET,
            *_FC,
        ),
        aliases=(
            (rf"layer{_BLOCK}shared_basis\.(?P<t>.+)", "shared_basis_{g}.{t}"),
            (rf"layer{_BLOCK}shared_basis_(?P<k>\d)\.(?P<t>.+)", "shared_basis_{g}_{k}.{t}"),
        ),
    ),
    "soft-sharing": Peer(
        (
            (r"conv_3x3\.(?P<t>.+)", "stem.conv.{t}"),
            (rf"bank_{_STAGE}\.templates", "stages.{s}.bank.templates"),
            (rf"stage_{_BLOCK}convShortcut\.(?P<t>.+)", "stages.{s}.blocks.{i}.shortcut.conv.{t}"),
            (rf"stage_{_BLOCK}(?P<t>.+)", "stages.{s}.blocks.{i}.{t}"),
            (r"lastact\.0\.(?P<t>.+)", "head.bn.{t}"),
            (r"classifier\.(?P<t>.+)", "head.fc.{t}"),
        ),
        aliases=((rf"stage_{_BLOCK}(?:conv\d\.)?bank\.templates", "bank_{g}.templates"),),
        reshape=(
            (".coefficients", torch.flatten),  # (s, 1, 1, 1, 1) -> (s,)
            (".templates", lambda t: t.flatten(0, 1)),  # (s, out, in, 3, 3) -> stacked (s * out, in, 3, 3)
        ),
    ),
}


def unwrap(obj) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: nested under "state_dict"/"model", `module.` stripped.

    Beside the nested state, a checkpoint may hold tensors of its own (Net_RL2's 0-d `acc`).
    """
    keys = ("state_dict", "model", "net", "model_state", "net_state_dict")  # the last: Net_RL2
    for _ in range(3):
        if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in keys if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            "checkpoint holds no state dict of tensors (looked under state_dict/model/net/net_state_dict)"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def detect_layout(keys) -> str:
    """'sharenet' or the peer's name (see PEERS); WeightsError for anything else.

    Net_RL2 also has torchvision's layer{g}.{i}.conv1 and fc keys: its shared bases decide first.
    """
    keys = set(keys)
    if any(k.startswith(("stem.", "stages.")) for k in keys):
        return "sharenet"
    if any(re.match(r"shared_basis_\d", k) for k in keys):
        return "netrl2"
    if "conv_3x3.weight" in keys and "classifier.weight" in keys:
        return "soft-sharing"
    if "layer1.0.conv1.weight" in keys and "fc.weight" in keys:
        return "torchvision"
    if "layer1.0.conv1.weight" in keys and "linear.weight" in keys:
        return "cifar"
    sample = ", ".join(sorted(keys)[:4])
    raise WeightsError(f"unknown checkpoint layout (keys like {sample}); known: sharenet, {', '.join(PEERS)}")


def _rename(rules: tuple[tuple[str, str], ...], key: str) -> str | None:
    """The name the first rule that fully matches `key` gives it; None when none does."""
    for pattern, template in rules:
        if m := re.fullmatch(pattern, key):
            groups = m.groupdict()
            return template.format(**groups, s=int(groups["g"]) - 1 if "g" in groups else None)
    return None


def drop_aliases(state: dict[str, torch.Tensor], peer: Peer) -> dict[str, torch.Tensor]:
    """`state` without the keys that repeat a shared tensor under a block; each must equal its original."""
    out = {}
    for key, value in state.items():
        original = _rename(peer.aliases, key)
        if original is None:
            out[key] = value
            continue
        if original not in state:
            raise WeightsError(f"{key!r} repeats a shared tensor, but the checkpoint lacks {original!r}")
        if not torch.equal(value, state[original]):
            raise WeightsError(f"{key!r} should repeat {original!r} but differs from it: the checkpoint is corrupt")
    return out


def to_sharenet(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Rename a peer state dict to sharenet's layout (the unshared one for torchvision and cifar;
    filter bases and template banks for netrl2 and soft-sharing), alias keys dropped."""
    if layout == "sharenet":
        return dict(state)
    peer = PEERS[layout]
    out = {}
    for key, value in drop_aliases(state, peer).items():
        ours = _rename(peer.rules, key)
        if ours is None:
            raise WeightsError(f"{layout} checkpoint has an unexpected key {key!r}")
        out[ours] = next((fn(value) for suffix, fn in peer.reshape if ours.endswith(suffix)), value)
    return out
