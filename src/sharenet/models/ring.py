"""The parameter ring (RPG: Wang, Chen, Yu, Cheung, LeCun, WACV 2023): one flat vector for every stage conv.

The network owns ONE trainable vector `ring.weight` of any size N. Every conv of the residual stages
(each block's 3x3 and 1x1 convs and the 1x1 shortcut convs; never the stem, the classifier or a
BatchNorm) takes its kernel as `ring[index] * sign * scale`, reading T entries in all (T: the
stage convs' kernel entries together, in module order):

- `index`: position t of the concatenated kernels reads ring entry pi(t) mod N, where pi is a
  keyed pseudo-random permutation of [0, T). Because pi is a bijection, every ring entry is read
  floor(T/N) or ceil(T/N) times, as RPG's shuffled concatenation of copies of arange(N) is.
- `sign`: a fixed pseudo-random +-1 per position.
- `scale`: sqrt(512 * 9 / (out * k * k)) per conv, with the ring drawn as Kaiming fan-out of a
  (512, -1, 3, 3) view (std sqrt(2 / 4608)): every conv starts with its own Kaiming fan-out std.

Unlike RPG's code, the map and signs are not random draws stored beside the weights: `ring_map`
derives them from (ring seed, N, T) with integer arithmetic alone (no torch or numpy RNG, so no
version or machine changes them), and the seed is part of the model config and weight file.
pi is a swap-or-not shuffle (Hoang, Morris, Rogaway, CRYPTO 2012), which permutes a domain of any
size without cycle walking: round r pairs x with (K_r - x) mod T and swaps the pair when a hash
bit of max(x, partner) is set. The hash is ((h * A + B) mod P)^2 mod P with P = 2^31 - 1, so every
product fits int64; round keys come from SplitMix64 (Steele et al. 2014) seeded with the ring
seed. Being integer ops on an arange, the same function runs inside an exported graph, so ONNX
and pt2 files store the ring, never the map (a random map of T entries costs about T log2 N bits).
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError
from .layers import LowRank

PRIME = 2**31 - 1  # hash modulus: (h * A + B) and v * v stay below 2^62 for h, A, B, v < 2^31
ROUNDS = 16  # swap-or-not rounds
RPG_FAN = 512 * 9  # RPG's reference fan-out: the ring is Kaiming fan-out of a (512, -1, 3, 3) view
CHUNK = 1 << 22  # positions mapped at once when building the map (bounds int64 temporaries)
_MASK = (1 << 64) - 1


def _splitmix64(seed: int):
    """SplitMix64's output stream: the round keys of a ring seed."""
    state = seed & _MASK
    while True:
        state = (state + 0x9E3779B97F4A7C15) & _MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        yield z ^ (z >> 31)


def ring_keys(seed: int, total: int) -> tuple[list[tuple[int, int, int]], tuple[int, int]]:
    """Per round (K in [0, T), A in [1, P), B in [0, P)), then the sign hash's (A, B)."""
    stream = _splitmix64(seed)
    rounds = [(next(stream) % total, 1 + next(stream) % (PRIME - 1), next(stream) % PRIME) for _ in range(ROUNDS)]
    return rounds, (1 + next(stream) % (PRIME - 1), next(stream) % PRIME)


def _bit(h: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """A pseudo-random bit of each h (int64 in [0, 2^31)): bit 16 of ((h * a + b) mod P)^2 mod P."""
    v = torch.remainder(h * a + b, PRIME)
    return (torch.remainder(torch.remainder(v * v, PRIME), 131072) >= 65536).long()  # no division: exporters
    # lower an integer floor division through floating point, which rounds values past 2^24


def map_positions(t: torch.Tensor, seed: int, size: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ring index, sign) of positions `t` (int64) of a ring of `size` entries read `total` times.

    Integer tensor ops on non-negative values only, so that it traces into an exported graph as it
    runs eagerly (an exporter may lower a remainder through a truncating division).
    """
    rounds, (sa, sb) = ring_keys(seed, total)
    x = t
    for k, a, b in rounds:
        partner = torch.remainder(k + total - x, total)  # (k - x) mod T, every operand non-negative
        x = torch.where(_bit(torch.maximum(x, partner), a, b) == 1, partner, x)
    return torch.remainder(x, size), 1 - 2 * _bit(t, sa, sb)


@functools.lru_cache(maxsize=8)
def ring_map(seed: int, size: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole map on the CPU: int32 ring index and int8 sign of every position 0..total-1."""
    if total >= 2**31:
        raise InvalidArgumentError(f"a ring serves fewer than 2^31 kernel entries; this network has {total:,}")
    index, sign = torch.empty(total, dtype=torch.int32), torch.empty(total, dtype=torch.int8)
    for start in range(0, total, CHUNK):
        t = torch.arange(start, min(start + CHUNK, total), dtype=torch.int64)
        i, s = map_positions(t, seed, size, total)
        index[start : start + len(t)], sign[start : start + len(t)] = i, s
    return index, sign


def rpg_scale(out_ch: int, k: int) -> float:
    """RPG's per-conv constant: restores the conv's own Kaiming fan-out std from the ring's."""
    return math.sqrt(RPG_FAN / (out_ch * k * k))


class ParameterRing(nn.Module):
    """The ring: `weight` (N,) and the seed its map is derived from; the network's stage convs read it.

    The map is derived on the ring's device when the ring is built or moved (so that a compiled step
    finds it ready) and cached. It is no buffer: not a parameter of the model, never saved, and
    rebuilt identically from the seed after a load, a move or meta-device construction + to_empty.
    """

    def __init__(self, size: int, seed: int, total: int):
        super().__init__()
        self.size, self.seed, self.total = size, seed, total
        self.weight = nn.Parameter(torch.empty(size))
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / RPG_FAN))
        self._map: tuple[torch.Tensor, torch.Tensor] | None = None  # (index, sign) on the ring's device
        self._flat: torch.Tensor | None = None  # while exporting: every kernel entry, derived in the graph
        self._derive()

    def _derive(self) -> None:
        if not self.weight.is_meta:
            self.map(self.weight.device)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._derive()
        return out

    def map(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(index, sign) of every position, on `device`."""
        if self._map is None or self._map[0].device != device:
            index, sign = ring_map(self.seed, self.size, self.total)
            self._map = (index.to(device), sign.to(device))
        return self._map

    def entries(self, offset: int, numel: int) -> torch.Tensor:
        """Signed ring entries of positions offset..offset+numel-1 (scale not applied)."""
        if self._flat is not None:
            return self._flat[offset : offset + numel]
        index, sign = self.map(self.weight.device)
        return self.weight.index_select(0, index[offset : offset + numel]) * sign[offset : offset + numel]

    @contextlib.contextmanager
    def derived_in_graph(self):
        """Within: kernels are read from one map computed by tensor ops from the seed, as an export
        traces it, so that the exported file holds the ring and the seed's arithmetic, not the map."""
        t = torch.arange(self.total, dtype=torch.int64, device=self.weight.device)
        index, sign = map_positions(t, self.seed, self.size, self.total)
        self._flat = self.weight[index] * sign.to(self.weight.dtype)
        try:
            yield
        finally:
            self._flat = None

    def extra_repr(self) -> str:
        return f"{self.size:,} entries for {self.total:,} kernel entries, seed={self.seed}"


class RingConv(nn.Module):
    """A conv (k x k, no bias) whose kernel is read from the ring: ring[index] * sign * scale, plus,
    under relaxed sharing (`rank` > 0), a low-rank correction of its own (`relax`)."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int, ring: ParameterRing, offset: int, rank: int = 0):
        super().__init__()
        self.in_ch, self.out_ch, self.k, self.stride, self.offset = in_ch, out_ch, k, stride, offset
        self.scale = rpg_scale(out_ch, k)
        self._borrowed = (ring,)  # a tuple: the ring is registered once, at the model's root
        if rank:
            self.relax = LowRank(rank, out_ch, in_ch * k * k)

    @property
    def borrowed(self) -> ParameterRing:
        return self._borrowed[0]

    @property
    def numel(self) -> int:
        return self.out_ch * self.in_ch * self.k * self.k

    def kernel(self) -> torch.Tensor:
        """The (out_ch, in_ch, k, k) kernel applied in forward."""
        flat = self.borrowed.entries(self.offset, self.numel) * self.scale
        kernel = flat.view(self.out_ch, self.in_ch, self.k, self.k)
        return self.relax.add_to(kernel) if hasattr(self, "relax") else kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel()
        if x.is_contiguous(memory_format=torch.channels_last):  # as a channels_last model's own kernels are
            kernel = kernel.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, kernel, None, self.stride, self.k // 2)

    def extra_repr(self) -> str:
        kernel = "ring+low-rank" if hasattr(self, "relax") else "ring"
        return f"{self.in_ch}, {self.out_ch}, kernel_size=({self.k}, {self.k}), stride={self.stride}, kernel={kernel}"
