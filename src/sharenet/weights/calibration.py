"""What a data-aware fit weighs each conv's errors by: the second moment of its input patches.

For a conv with kernel W (out, in*k*k) and input patches X (one row per output position), the
output is X W^T, so the error of a fitted kernel F on those inputs is ||X (F - W)^T||^2 =
tr((F - W) C (F - W)^T) with C = X^T X / rows. Only C is kept (in*k*k squared per conv, never the
patches); weights/fit.py turns it into closed forms. The patches are read with forward hooks on the
network whose kernels are fitted (the teacher), in eval mode, on calibration images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InvalidArgumentError

ADVICE = "pass more calibration images, or fit weights"


def input_covariances(
    model: nn.Module,
    paths: list[str],
    batches: Iterable[torch.Tensor],
    *,
    reduce: Callable[[torch.Tensor], None] | None = None,
    ranks: int = 1,
    advice: str = ADVICE,
) -> dict[str, torch.Tensor]:
    """Per conv path of `model`, C = X^T X / rows (float64, on the CPU) over the input patches of
    every image of `batches` (rows: every output position of every image; columns: in*k*k, the
    kernel's layout). `reduce` sums a tensor over the processes of a distributed run (`ranks` of
    them, each with batches of the same size). The model runs as it is (eval mode: a teacher), in
    the caller's autocast. A conv whose inputs span fewer than half of its dimensions cannot be
    fitted on them (the whitened fit would invert a near-singular C): InvalidArgumentError, ending
    with `advice`."""
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}  # patches seen per conv (the same on every rank: equal batches)

    def hook(path, conv):
        if isinstance(conv, nn.Conv2d):  # a 1x1 (or a peer's) conv
            k, stride = conv.kernel_size[0], conv.stride[0]
        else:  # sharenet's Conv3x3 (own, borrowed or template kernel), BasisConv3x3 or RingConv
            k, stride = getattr(conv, "k", 3), conv.stride

        def record(module, inputs, output):
            patches = F.unfold(inputs[0].float(), k, padding=k // 2, stride=stride)  # (N, d, P)
            x = patches.transpose(1, 2).reshape(-1, patches.shape[1])
            moment = (x.T @ x).double().cpu()  # fp32 products, summed in fp64 across batches
            sums[path] = sums[path] + moment if path in sums else moment
            rows[path] = rows.get(path, 0) + x.shape[0]

        return conv.register_forward_hook(record)

    handles = [hook(p, model.get_submodule(p)) for p in paths]
    used = 0
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
                used += 1
    finally:
        for h in handles:
            h.remove()
    if not used:
        raise InvalidArgumentError(f"a data-aware fit needs at least one calibration batch; {advice}")
    for path, t in sums.items():
        if reduce is not None:
            reduce(t)
        t /= rows[path] * ranks  # the mean of x x^T: a fit's scale does not grow with the count
        if t.trace() == 0 or torch.linalg.matrix_rank(t.float()) < t.shape[0] // 2:
            raise InvalidArgumentError(
                f"too few calibration images for a data-aware fit: {used} batches leave the inputs of {path} "
                f"spanning fewer than half of its {t.shape[0]} dimensions; {advice}"
            )
    return sums


def in_batches(images: torch.Tensor, size: int = 128) -> Iterable[torch.Tensor]:
    """A tensor of calibration images (N, C, H, W), `size` at a time."""
    return (images[i : i + size] for i in range(0, len(images), size))
