"""Key mappings from peer checkpoint layouts to sharenet's (unshared) layout.

One function per peer: torchvision's ImageNet ResNets and the CIFAR-ResNet layout of popular
repositories (conv1, bn1, layer1..3.{i}.{conv1,bn1,conv2,bn2}, linear). Peer names stop here.
"""

from __future__ import annotations

import re

import torch

from ..errors import WeightsError

_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(.+)")
_SHORTCUT = {"downsample.0": "shortcut.conv", "downsample.1": "shortcut.bn",
             "shortcut.0": "shortcut.conv", "shortcut.1": "shortcut.bn"}  # fmt: skip


def unwrap(obj) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: nested under "state_dict"/"model", `module.` stripped."""
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model", "net", "model_state") if k in obj), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError("checkpoint holds no state dict of tensors (looked under state_dict/model/net)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def detect_layout(keys) -> str:
    """'sharenet', 'torchvision' or 'cifar'; WeightsError for anything else."""
    keys = set(keys)
    if any(k.startswith(("stem.", "stages.")) for k in keys):
        return "sharenet"
    if "layer1.0.conv1.weight" in keys and "fc.weight" in keys:
        return "torchvision"
    if "layer1.0.conv1.weight" in keys and "linear.weight" in keys:
        return "cifar"
    sample = ", ".join(sorted(keys)[:4])
    raise WeightsError(f"unknown checkpoint layout (keys like {sample}); known: sharenet, torchvision, cifar")


def _block_key(rest_key: str, stage: int, index: int) -> str:
    for peer, ours in _SHORTCUT.items():
        if rest_key.startswith(peer + "."):
            rest_key = ours + rest_key[len(peer) :]
    return f"stages.{stage - 1}.blocks.{index}.{rest_key}"


def to_sharenet(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Rename a peer state dict to sharenet's unshared layout."""
    if layout == "sharenet":
        return dict(state)
    head = {"torchvision": "fc.", "cifar": "linear."}[layout]
    out = {}
    for key, value in state.items():
        if m := _BLOCK.fullmatch(key):
            out[_block_key(m.group(3), int(m.group(1)), int(m.group(2)))] = value
        elif key.startswith("conv1."):
            out["stem.conv." + key[6:]] = value
        elif key.startswith("bn1."):
            out["stem.bn." + key[4:]] = value
        elif key.startswith(head):
            out["head.fc." + key[len(head) :]] = value
        else:
            raise WeightsError(f"{layout} checkpoint has an unexpected key {key!r}")
    return out
