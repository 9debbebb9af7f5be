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
- relaxed sharing's corrections: each conv's B A is the rank-r truncation (SVD) of what the fitted
  shared kernel leaves of its own kernel, W - S: the best rank-r correction (Eckart-Young).

A data-aware fit (`covariances`: each conv's input-patch second moment C = X^T X over calibration
images, from `input_covariances`) minimises the error of each conv's output X W^T instead of its
weights, as SVD-LLM and Basis Sharing do: the shared kernel is S = (sum W_l C_l)(sum C_l)^-1, a
ring entry the mean weighted by the diagonal of C (the closed form stays a mean), and each
correction the rank-r truncation of (W - S) L times L^-1, with C = L L^T (the whitened SVD).
Templates and a shared basis, read by convs with different inputs, are found by SVD in the space
whitened by all their inputs together (sum of C, as Basis Sharing does); what each conv holds
itself (its coefficients, its own filters) is then fitted on its own inputs. The errors reported
are then ||(fit - W) L|| / ||W L||: relative errors of the conv's outputs.
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


def _errors(
    slots: list[ConvSlot], kernels: list[torch.Tensor], fits: list[torch.Tensor], roots: dict | None = None
) -> dict[str, float]:
    """Relative error of each fit: of the kernel, or, with `roots` (each conv's whitening L), of
    the conv's outputs."""
    out = {}
    for s, k, f in zip(slots, kernels, fits, strict=True):
        root = roots[s.path] if roots is not None else None
        w, d = k.flatten(1).double(), (f - k).flatten(1).double()
        if root is not None:
            w, d = w @ root, d @ root
        out[s.path] = float(d.norm() / w.norm().clamp_min(1e-12))
    return out


DAMPING = 1e-3  # of C's mean diagonal, added to it (ridge): a direction the calibration inputs barely reach
# stays solvable, and L^-1 amplifies it at most ~30x, so a whitened correction stays trainable


def _damped(c: torch.Tensor) -> torch.Tensor:
    c = c.double()
    return c + DAMPING * c.diagonal().mean().clamp_min(1e-12) * torch.eye(c.shape[0], dtype=c.dtype)


def whitening(c: torch.Tensor) -> torch.Tensor:
    """L with C = L L^T (Cholesky of the damped second moment of a conv's input patches)."""
    return torch.linalg.cholesky(_damped(c))


def _roots(slots: list[ConvSlot], covariances: dict | None) -> dict | None:
    """Each conv's whitening, computed once per fit (a Cholesky of up to 576 x 576 per conv)."""
    return None if covariances is None else {s.path: whitening(covariances[s.path]) for s in slots}


def mean_kernel(
    owned: Owned, slots: list[ConvSlot], kernels: list[torch.Tensor], covariances: dict | None = None
) -> Fitted:
    """The mean kernel, or with `covariances` the kernel of least output error over every user:
    S = (sum W_l C_l)(sum C_l)^-1 (the normal equations of sum ||X_l (W_l - S)^T||^2)."""
    if covariances is None:
        shared = torch.stack(kernels).mean(0)
    else:
        cs = [_damped(covariances[s.path]) for s in slots]  # the ridge pulls S towards the plain mean, not 0
        rhs = sum(k.flatten(1).double() @ c for k, c in zip(kernels, cs, strict=True))
        shared = torch.linalg.solve(sum(cs), rhs.T).T.reshape(kernels[0].shape)  # C symmetric: S = rhs C^-1
    return {owned.key: shared}, _errors(slots, kernels, [shared] * len(kernels), _roots(slots, covariances))


def corrections(
    slots: list[ConvSlot], kernels: list[torch.Tensor], applied: list[torch.Tensor], covariances: dict | None = None
) -> Fitted:
    """Relaxed sharing: each conv's B (out, r) and A (r, in*k*k), the rank-r truncation of what the
    shared kernel it applies (`applied`) leaves of its own, in weight space or whitened by its
    inputs; the errors are of the corrected kernels."""
    state, fits, roots = {}, [], _roots(slots, covariances)
    for slot, w, s in zip(slots, kernels, applied, strict=True):
        residual = (w - s).flatten(1).double()  # (out, in*k*k)
        root = roots[slot.path] if roots is not None else None
        u, sv, vh = torch.linalg.svd(residual @ root if root is not None else residual, full_matrices=False)
        r = slot.rank
        b, a = u[:, :r] * sv[:r], vh[:r]
        if root is not None:  # whitened: a = V^T L^-1 (solve L^T a^T = V)
            a = torch.linalg.solve_triangular(root.T, a.T, upper=True).T
        # PiSSA's balanced split: each rank-1 term b_i a_i with ||b_i|| = ||a_i||, so that a training
        # step moves both alike (a whitened split would leave B as large as A is small)
        gain = (a.norm(dim=1) / b.norm(dim=0).clamp_min(1e-300)).sqrt()
        b, a = b * gain, a / gain[:, None].clamp_min(1e-300)
        state[f"{slot.path}.relax.a"], state[f"{slot.path}.relax.b"] = a, b
        fits.append(s.double() + (b @ a).view_as(s))
    return state, _errors(slots, [k.double() for k in kernels], fits, roots)


def _unwhiten(m: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """Rows found in a whitened space (m = x L) back in the kernel's: x = m L^-1."""
    return torch.linalg.solve_triangular(root.T, m.T, upper=True).T


def _pooled(slots: list[ConvSlot], covariances: dict) -> torch.Tensor:
    """The whitening of every user's inputs together (sum of their C): the one space in which a
    tensor all of them read (templates, a shared basis) is found by SVD, as Basis Sharing does."""
    return torch.linalg.cholesky(sum(_damped(covariances[s.path]) for s in slots))


def template_bank(
    owned: Owned,
    slots: list[ConvSlot],
    kernels: list[torch.Tensor],
    init: torch.Tensor,
    covariances: dict | None = None,
) -> Fitted:
    """`init`: the model's current templates, kept for the ones beyond the kernels' rank. With
    `covariances`, the templates are the SVD of the kernels whitened by every user's inputs together,
    and each conv's coefficients the least-squares mix of least error on its own inputs."""
    pooled = None if covariances is None else _pooled(slots, covariances)
    flat = torch.stack(
        [(k.flatten(1).double() @ pooled if pooled is not None else k.double()).flatten() for k in kernels]
    )
    u, s, vh = torch.linalg.svd(flat, full_matrices=False)  # rows: (convs, out*in*9)
    rank = min(owned.count, len(kernels))
    templates = init.detach().clone().double().unflatten(0, (owned.count, owned.out_ch))  # (s, out, in, 3, 3)
    mixed = (s[:rank, None] * vh[:rank]).reshape(rank, owned.out_ch, -1)
    if pooled is not None:
        mixed = torch.stack([_unwhiten(t, pooled) for t in mixed])
    templates[:rank] = mixed.reshape(rank, *templates.shape[1:])
    coefficients = torch.zeros(len(kernels), owned.count, dtype=torch.float64)
    roots = _roots(slots, covariances)
    if roots is None:
        coefficients[:, :rank] = u[:, :rank]
    else:  # per conv: min ||(W - sum_j c_j T_j) L|| over c, a least-squares problem in `rank` unknowns
        for i, (slot, w) in enumerate(zip(slots, kernels, strict=True)):
            root = roots[slot.path]
            basis = torch.stack([(t.flatten(1) @ root).flatten() for t in templates[:rank].flatten(2)])
            target = (w.flatten(1).double() @ root).flatten()
            coefficients[i, :rank] = torch.linalg.lstsq(basis.T, target[:, None]).solution[:, 0]
        gain = coefficients[:, :rank].norm(dim=0)  # unit coefficient columns, as the SVD's u: the scale
        gain = torch.where(gain > 0, gain, torch.ones_like(gain))  # lives in the templates either way
        templates[:rank] *= gain.view(-1, 1, 1, 1, 1)
        coefficients[:, :rank] /= gain
    fits = [torch.tensordot(c, templates, 1) for c in coefficients]
    state = {
        owned.key: templates.flatten(0, 1),
        **{f"{s.path}.coefficients": c for s, c in zip(slots, coefficients, strict=True)},
    }
    return state, _errors(slots, [k.double() for k in kernels], fits, roots)


def _unit(rows: torch.Tensor) -> torch.Tensor:
    """Rows scaled to norm 1 (zero rows stay zero): a basis the identity BatchNorm after it passes as is."""
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)


def filter_basis(
    owned: Owned, slots: list[ConvSlot], kernels: list[torch.Tensor], eps: float, covariances: dict | None = None
) -> Fitted:
    """`eps`: the basis BatchNorms' epsilon, so that running_var = 1 - eps makes them the identity.
    With `covariances`, the shared basis is the top singular vectors of every conv's filters whitened
    by all their inputs together; each conv's own filters those of what the shared basis leaves of
    its outputs (whitened by its own inputs), its coefficients the least-squares fit of its outputs."""
    rows = [k.flatten(1).double() for k in kernels]  # each (out, in*9)
    roots = _roots(slots, covariances)
    if roots is None:
        shared = _top(torch.cat(rows), owned.out_ch)  # (s, in*9)
    else:
        pooled = _pooled(slots, covariances)
        shared = _unit(_unwhiten(_top(torch.cat([w @ pooled for w in rows]), owned.out_ch), pooled))
    state, fits = {owned.key: shared.reshape(owned.shape)}, []
    for slot, w in zip(slots, rows, strict=True):
        if roots is None:
            rest = w - (w @ shared.T) @ shared
            own = _top(rest, slot.own_rank)  # (u, in*9)
            basis = torch.cat([own, shared])  # the conv's order: own filters, then shared
            coeff = w @ torch.linalg.pinv(basis)  # (out, u+s); least squares: own rows of a near-zero rest are noise
        else:  # the same in the space whitened by this conv's inputs: x -> x L
            root = roots[slot.path]
            z, seen = w @ root, shared @ root
            rest = z - (z @ torch.linalg.pinv(seen)) @ seen
            own = _unit(_unwhiten(_top(rest, slot.own_rank), root))
            basis = torch.cat([own, shared])
            coeff = z @ torch.linalg.pinv(basis @ root)
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
    return state, _errors(slots, rows, fits, roots)


def ring(
    owned: Owned,
    slots: list[ConvSlot],
    kernels: list[torch.Tensor],
    seed: int,
    init: torch.Tensor,
    covariances: dict | None = None,
) -> Fitted:
    """`slots` in ring order (their offsets); `init`: the ring's current entries, kept where none is
    read. With `covariances`, each position's squared error is weighted by the second moment of the
    input it multiplies (C's diagonal): weighted least squares, still one closed form per entry."""
    index, coef, scale = _reading(owned, slots, seed)
    target = torch.cat([k.flatten().double() for k in kernels])
    if covariances is None:
        weight = torch.ones_like(target)
    else:  # position (o, i) of conv l weighs C_l[i, i]: its input's energy, the same for every output o
        weight = torch.cat([covariances[s.path].double().diagonal().repeat(s.out_ch) for s in slots])
        weight = weight / weight.mean().clamp_min(1e-300)
    num = torch.zeros(owned.size, dtype=torch.float64).index_add_(0, index, weight * coef * target)
    den = torch.zeros(owned.size, dtype=torch.float64).index_add_(0, index, weight * scale.square())
    fitted = torch.where(den > 0, num / den.clamp_min(1e-300), init.double())
    fits = ring_kernels(owned, slots, fitted, seed)
    return {owned.key: fitted}, _errors(slots, [k.double() for k in kernels], fits, _roots(slots, covariances))


def _reading(owned: Owned, slots: list[ConvSlot], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How the ring's convs read it, position by position in ring order: the entry each position
    reads, what it multiplies that entry by (sign * its conv's scale) and the scale alone."""
    index, sign = ring_map(seed, owned.size, sum(slot.numel for slot in slots))
    scale = torch.cat([torch.full((s.numel,), rpg_scale(s.out_ch, s.kernel), dtype=torch.float64) for s in slots])
    return index.long(), sign.double() * scale, scale


def ring_kernels(owned: Owned, slots: list[ConvSlot], entries: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """The kernel each ring conv reads from `entries` (float64), as RingConv computes it."""
    index, coef, _ = _reading(owned, slots, seed)
    flat = entries.double()[index] * coef
    shapes = [(s.out_ch, s.in_ch, s.kernel, s.kernel) for s in slots]
    return [f.view(shape) for f, shape in zip(flat.split([s.numel for s in slots]), shapes, strict=True)]
