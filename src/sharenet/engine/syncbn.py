"""Cross-rank BatchNorm for every backend: BatchNorm over the global batch of a distributed run.

torch.nn.SyncBatchNorm refuses CPU tensors and knows nothing of the residual add and ReLU that
sharenet's `BatchNormAct2d` carries. `CrossRankBatchNorm2d` keeps that layer's forward and
all-reduces the per-channel sum, sum of squares and count through torch.distributed.nn's
autograd-aware all_reduce (gloo or NCCL), so the forward pass and the gradients equal BatchNorm
over the global batch (the DDP equivalence test checks this against one process).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed.nn.functional as dist_fn
from torch import nn

from ..models.fused import update_running_stats
from ..models.norm_act import BatchNormAct2d
from .distributed import world_size


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # its suggested replacement (_functional_collectives) is private API
        warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated")
        return dist_fn.all_reduce(t)


class CrossRankBatchNorm2d(BatchNormAct2d):
    """BatchNormAct2d whose training-mode statistics are those of the global batch of all ranks."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().normalize(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), x.numel() // c, dtype=torch.float32, device=x.device)
        packed = _all_reduce(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))
        n = packed[-1]
        mean = packed[:c] / n
        var = (packed[c : 2 * c] / n - mean * mean).clamp_min(0)  # biased: what normalisation uses
        update_running_stats(self, mean, var, int(n.item()))
        y = (xf - mean.view(1, c, 1, 1)) * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by its cross-rank form, keeping parameters, statistics and activation."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, CrossRankBatchNorm2d):
            new = CrossRankBatchNorm2d(
                child.num_features,
                act=getattr(child, "act", False),
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            new.weight, new.bias = child.weight, child.bias  # the same Parameters: optimizer stays valid
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert(child)
    return module
