"""Learned sharing: template banks (Savarese & Maire 2019) and shared filter bases (Kang et al.).

Both keep the one mechanism of layers.py: the stage registers the shared tensor once and each
conv holds a plain reference to its module, so ties survive copies, moves and loads as hard
sharing's do. What differs is what a conv applies:

- `TemplateConv3x3`: sum_i coefficients[i] * bank.templates[i], its own mix of the stage's bank.
- `BasisConv3x3`: its own rank-u basis and the stage's rank-s basis as one 3x3 conv (in -> u+s),
  a BatchNorm over the u+s responses, then a 1x1 conv of coefficients (u+s -> out).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .layers import Conv3x3, _init_kernel, conv1x1
from .norm_act import BatchNormAct2d


class TemplateBank(nn.Module):
    """`count` kernels, each initialised as a conv's own kernel would be.

    Stored stacked along the output channels, (count * out_ch, in_ch, 3, 3): a 4-D tensor, which
    `model.to(memory_format=torch.channels_last)` converts like any conv weight (it refuses 5-D ones).
    """

    def __init__(self, count: int, in_ch: int, out_ch: int):
        super().__init__()
        self.count, self.in_ch, self.out_ch = count, in_ch, out_ch
        self.templates = nn.Parameter(torch.empty(count * out_ch, in_ch, 3, 3))
        for template in self.templates.data.split(out_ch):
            _init_kernel(template)

    def stack(self) -> torch.Tensor:
        """The templates as (count, out_ch, in_ch, 3, 3), a view."""
        return self.templates.unflatten(0, (self.count, self.out_ch))

    def extra_repr(self) -> str:
        return f"{self.count} templates, {self.in_ch}, {self.out_ch}, kernel_size=(3, 3)"


class TemplateConv3x3(Conv3x3):
    """A 3x3 conv whose kernel is its own linear mix of a `TemplateBank` (no weight decay on the mix)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, bank: TemplateBank):
        super().__init__(in_ch, out_ch, stride, bank)
        self.coefficients = nn.Parameter(torch.zeros(bank.count))  # set by orthogonal_coefficients

    def kernel(self) -> torch.Tensor:
        return torch.tensordot(self.coefficients, self.borrowed.stack(), 1)  # (s,) x (s, out, in, 3, 3)

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}, kernel=mix of {self.borrowed.count} templates"


class BasisConv3x3(nn.Module):
    """Kang et al.'s decomposed 3x3 conv: [own basis; shared basis] -> BatchNorm -> 1x1 coefficients."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, shared: nn.Module, own_rank: int):
        super().__init__()
        rank = own_rank + shared.out_ch
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.basis = Conv3x3(in_ch, rank, stride, shared, own=own_rank)  # responses: own filters, then shared
        self.bn = BatchNormAct2d(rank, act=False)
        self.coeff = conv1x1(rank, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.coeff(self.bn(self.basis(x)))  # (N, in, H, W) -> (N, u+s, H', W') -> (N, out, H', W')

    @torch.no_grad()
    def fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kernel, bias) of the one 3x3 conv this computes in eval mode (BatchNorm is affine there)."""
        bn, f64 = self.bn, torch.float64  # folded in float64: exact in the model's own dtype
        scale = bn.weight.to(f64) / torch.sqrt(bn.running_var.to(f64) + bn.eps)  # (u+s,)
        coeff = self.coeff.weight.flatten(1).to(f64)  # (out, u+s)
        kernel = torch.tensordot(coeff * scale, self.basis.kernel().to(f64), 1)  # (out, in, 3, 3)
        bias = coeff @ (bn.bias.to(f64) - bn.running_mean.to(f64) * scale)
        dtype = self.coeff.weight.dtype
        return kernel.to(dtype), bias.to(dtype)


@torch.no_grad()
def orthogonal_coefficients(convs: list[TemplateConv3x3]) -> None:
    """Savarese & Maire: a (convs, templates) matrix, orthogonally initialised; row j mixes conv j."""
    if convs and not convs[0].coefficients.is_meta:
        rows = torch.empty(len(convs), convs[0].coefficients.numel())
        nn.init.orthogonal_(rows)
        for conv, row in zip(convs, rows, strict=True):
            conv.coefficients.copy_(row)


@torch.no_grad()
def orthogonal_bases(bases: list[nn.Module]) -> None:
    """Kang et al.: a stage's shared bases initialised together, one orthogonal (sum of ranks, in*9) matrix."""
    if bases and not bases[0].weight.is_meta:
        joint = torch.empty(sum(b.weight.shape[0] for b in bases), *bases[0].weight.shape[1:])
        nn.init.orthogonal_(joint)
        for basis, part in zip(bases, joint.split([b.weight.shape[0] for b in bases]), strict=True):
            basis.weight.copy_(part)


def basis_penalty(model: nn.Module, own: bool = True, weight: float = 1.0) -> torch.Tensor:
    """Kang et al.'s orthogonality penalty on the filter bases, times `weight` (their lambda_R = 10).

    Per stage, B stacks the raw (unnormalised) flattened rows of its shared bases, then (`own`)
    each basis conv's own basis. The terms are the squared entries of B B^T - I for the shared
    rows against every row, and for each own basis against itself; the penalty is their mean
    over all stages at once. `own=False` (their ImageNet code) keeps the shared rows only.
    """
    total, count = None, 0
    for stage in model.stages:
        shared = [m.weight for name, m in stage.named_children() if name.startswith("basis")]
        if not shared:
            continue
        rows = torch.cat(shared).flatten(1)  # (s_total, in*9)
        owns = [
            m.basis.weight.flatten(1) for m in stage.modules() if isinstance(m, BasisConv3x3) and own and m.basis.own
        ]
        every = torch.cat([rows, *owns])
        gram = rows @ every.T  # (s, s + sum u)
        terms = [(gram - torch.eye(*gram.shape, device=gram.device, dtype=gram.dtype)).square().sum()]
        count += gram.numel()
        for u in owns:
            terms.append((u @ u.T - torch.eye(len(u), device=u.device, dtype=u.dtype)).square().sum())
            count += len(u) ** 2
        total = sum(terms) if total is None else total + sum(terms)
    if total is None:
        raise InvalidArgumentError("the orthogonality penalty needs a model with share='basis'")
    return weight * total / count
