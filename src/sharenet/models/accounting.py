"""Parameter and compute accounting; a shared tensor counts once for storage, once per use for compute."""

from __future__ import annotations

import torch
from torch import nn

from .layers import Conv3x3
from .ring import RingConv

DERIVED = (Conv3x3, RingConv)  # convs whose kernel() is computed (borrowed, mixed or read from the ring)


def count_params(model: nn.Module) -> int:
    """Trainable parameters, each distinct tensor once (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def share_groups(model: nn.Module) -> dict[str, list[str]]:
    """The sharing plan as data: state_dict key of each shared tensor -> the convs that use it."""
    return model.plan.groups()


def conv_kernels(model: nn.Module) -> list[torch.Tensor]:
    """The kernel each conv layer applies, in module order (a shared kernel once per use)."""
    out = []
    for module in model.modules():
        if isinstance(module, DERIVED):
            out.append(module.kernel())
        elif isinstance(module, nn.Conv2d):
            out.append(module.weight)
    return out


def count_macs(model: nn.Module, input_size: int, in_chans: int) -> int:
    """Multiply-accumulates of one forward pass of one image (convolutions and linear layers)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        else:
            kernel = module.kernel() if isinstance(module, DERIVED) else module.weight
            total += output[0].numel() * kernel[0].numel()

    layers = [m for m in model.modules() if isinstance(m, (*DERIVED, nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size, dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def describe(model: nn.Module) -> dict:
    """Counts that `sharenet params NAME` prints."""
    kernels = conv_kernels(model)
    return {
        "model": model.config.get("name"),
        "share": model.config.get("share"),
        "num_classes": model.config.get("num_classes"),
        "params": count_params(model),
        "conv_layers": len(kernels),
        "distinct_conv_kernels": len({id(k) for k in kernels}),
        "macs": count_macs(model, model.arch.input_size, model.config.get("in_chans", 3)),
        "input_size": model.arch.input_size,
        "width": model.arch.width,
        "sharing": model.plan.sharing.options(),
        "shared_kernels": share_groups(model),
        "corrections": corrections(model),
    }


def corrections(model: nn.Module) -> dict:
    """Relaxed sharing: how many convs add a low-rank correction B A to the kernel they read, of
    which rank, and the parameters the corrections hold (r * (out + in*k*k) each); {} for hard
    sharing. With corrections every conv applies a kernel of its own, so `distinct_conv_kernels`
    counts them apart while `shared_kernels` still names what they read."""
    slots = [s for s in model.plan.slots if s.rank]
    if not slots:
        return {}
    held = sum(s.rank * (s.out_ch + s.in_ch * s.kernel**2) for s in slots)
    return {"convs": len(slots), "rank": slots[0].rank, "params": held}
