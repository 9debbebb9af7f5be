"""Fitting unshared kernels to a sharing plan: one entry per kind of shared tensor.

Each fit takes the kernels (out, in, 3, 3) of the convs that will use one shared tensor and
returns that tensor, what each conv then holds itself, and each conv's relative reconstruction
error ||fit - kernel|| / ||kernel||:

- shared kernel (ShaResNet, Dai et al.): the mean of the kernels.
- template bank (Savarese & Maire): the best rank-s approximation of the (convs, in*out*9) matrix
  by SVD; templates are its right singular vectors (scaled), coefficients the left ones. Exact
  when s >= the number of convs; templates beyond the rank keep their initialisation, unmixed.
- shared filter basis (Kang et al.): the top-s right singular vectors of all the convs' filters
  stacked (out*convs, in*9) as the shared basis; per conv, the top-u singular vectors of what it
  leaves as the own basis; coefficients by least squares on the joint basis; the basis
  BatchNorm set to the identity in eval mode.
- parameter ring (RPG): least squares with a closed form. Position t of conv l reads
  sign_t * scale_l * ring[index_t], so each ring entry is the weighted mean of the signed kernel
  entries mapped to it: ring[j] = sum(sign_t scale_l k_t) / sum(scale_l^2) over the positions
  reading j. Entries no position reads keep their initialisation.
"""

from __future__ import annotations

import torch

from ..models.plan import ConvSlot, Owned
from ..models.ring import ring_map, rpg_scale

Fitted = tuple[dict[str, torch.Tensor], dict[str, float]]  # state_dict entries, conv path -> error


def _top(m: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k right singular vectors of m as rows, zero rows where m has fewer."""
    vh = torch.linalg.svd(m, full_matrices=False)[2][:k]
    return torch.cat([vh, vh.new_zeros(k - vh.shape[0], m.shape[1])])


def _errors(slots: list[ConvSlot], kernels: list[torch.Tensor], fits: list[torch.Tensor]) -> dict[str, float]:
    return {
        s.path: float((f - k).norm() / k.norm().clamp_min(1e-12)) for s, k, f in zip(slots, kernels, fits, strict=True)
    }


def mean_kernel(owned: Owned, slots: list[ConvSlot], kernels: list[torch.Tensor]) -> Fitted:
    mean = torch.stack(kernels).mean(0)
    return {owned.key: mean}, _errors(slots, kernels, [mean] * len(kernels))


def template_bank(owned: Owned, slots: list[ConvSlot], kernels: list[torch.Tensor], init: torch.Tensor) -> Fitted:
    """`init`: the model's current templates, kept for the ones beyond the kernels' rank."""
    flat = torch.stack([k.flatten() for k in kernels]).double()  # (convs, out*in*9)
    u, s, vh = torch.linalg.svd(flat, full_matrices=False)
    rank = min(owned.count, len(kernels))
    templates = init.detach().clone().double().unflatten(0, (owned.count, owned.out_ch))  # (s, out, in, 3, 3)
    templates[:rank] = (s[:rank, None] * vh[:rank]).reshape(rank, *templates.shape[1:])
    coefficients = torch.zeros(len(kernels), owned.count, dtype=torch.float64)
    coefficients[:, :rank] = u[:, :rank]
    fits = [torch.tensordot(c, templates, 1) for c in coefficients]
    state = {
        owned.key: templates.flatten(0, 1),
        **{f"{s.path}.coefficients": c for s, c in zip(slots, coefficients, strict=True)},
    }
    return state, _errors(slots, [k.double() for k in kernels], fits)


def filter_basis(owned: Owned, slots: list[ConvSlot], kernels: list[torch.Tensor], eps: float) -> Fitted:
    """`eps`: the basis BatchNorms' epsilon, so that running_var = 1 - eps makes them the identity."""
    rows = [k.flatten(1).double() for k in kernels]  # each (out, in*9)
    shared = _top(torch.cat(rows), owned.out_ch)  # (s, in*9)
    state, fits = {owned.key: shared.reshape(owned.shape)}, []
    for slot, w in zip(slots, rows, strict=True):
        rest = w - (w @ shared.T) @ shared
        own = _top(rest, slot.own_rank)  # (u, in*9)
        basis = torch.cat([own, shared])  # the conv's order: own filters, then shared
        coeff = w @ torch.linalg.pinv(basis)  # (out, u+s); least squares: own rows of a near-zero rest are noise
        fits.append(coeff @ basis)
        rank, p = basis.shape[0], slot.path
        if slot.own_rank:
            state[f"{p}.basis.weight"] = own.reshape(slot.own_rank, slot.in_ch, 3, 3)
        state.update(
            {
                f"{p}.bn.weight": torch.ones(rank),
                f"{p}.bn.bias": torch.zeros(rank),
                f"{p}.bn.running_mean": torch.zeros(rank),
                f"{p}.bn.running_var": torch.full((rank,), 1.0 - eps),
                f"{p}.bn.num_batches_tracked": torch.tensor(0),
                f"{p}.coeff.weight": coeff.reshape(slot.out_ch, rank, 1, 1),
            }
        )
    return state, _errors(slots, rows, fits)


def ring(owned: Owned, slots: list[ConvSlot], kernels: list[torch.Tensor], seed: int, init: torch.Tensor) -> Fitted:
    """`slots` in ring order (their offsets); `init`: the ring's current entries, kept where none is read."""
    total = sum(slot.numel for slot in slots)
    index, sign = ring_map(seed, owned.size, total)
    index = index.long()
    scale = torch.cat([torch.full((s.numel,), rpg_scale(s.out_ch, s.kernel), dtype=torch.float64) for s in slots])
    coef = sign.double() * scale  # what each position multiplies its ring entry by
    target = torch.cat([k.flatten().double() for k in kernels])
    num = torch.zeros(owned.size, dtype=torch.float64).index_add_(0, index, coef * target)
    den = torch.zeros(owned.size, dtype=torch.float64).index_add_(0, index, scale.square())
    fitted = torch.where(den > 0, num / den.clamp_min(1e-300), init.double())
    flat = fitted[index] * coef
    fits = [f.view_as(k) for f, k in zip(flat.split([s.numel for s in slots]), kernels, strict=True)]
    return {owned.key: fitted}, _errors(slots, [k.double() for k in kernels], fits)
