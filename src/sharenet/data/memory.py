"""Small data sets held whole in memory as uint8 tensors, batched and augmented on the device.

Holding (N, C, H, W) uint8 and augmenting whole batches avoids per-image Python work: on 2 CPU
cores the data path stays a small fraction of a training step. The order of every epoch and
the augmentation of every step derive from (seed, epoch, step) alone, so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .preprocess import normalize


@dataclass
class InMemoryData:
    name: str
    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    source: str  # where the files were read from

    @property
    def in_chans(self) -> int:
        return self.train_x.shape[1]

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        x = self.train_x.float().div_(255).transpose(0, 1).reshape(self.in_chans, -1)
        return x.mean(1).tolist(), x.std(1).tolist()


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def draw_crop_flip(n: int, pad: int, flip: bool, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random crop offsets (dy, dx) and flip decisions for `n` images."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    mask = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return dy, dx, mask


def crop_flip(x: torch.Tensor, dy, dx, mask, pad: int, reflect: bool) -> torch.Tensor:
    """Pad-and-crop at offsets (dy, dx) and flip where `mask`, for a whole uint8 batch in a few ops."""
    n, _, h, w = x.shape
    if pad:
        mode = "reflect" if reflect else "constant"
        padded = F.pad(x.float() if reflect else x, (pad, pad, pad, pad), mode=mode).to(x.dtype)
        rows = (dy[:, None] + torch.arange(h)).to(x.device)  # (N, H)
        cols = (dx[:, None] + torch.arange(w)).to(x.device)  # (N, W)
        idx = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if mask.any():
        x = torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)
    return x


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, reflect: bool, gen: torch.Generator) -> torch.Tensor:
    return crop_flip(x, *draw_crop_flip(len(x), pad, flip, gen), pad=pad, reflect=reflect)


class BatchStream:
    """Iterates (images, labels) batches of one epoch, from any step, for one rank's shard.

    Images leave as normalised float tensors on `device` in `memory_format`.
    """

    def __init__(
        self,
        x,
        y,
        batch_size,
        *,
        mean,
        std,
        device,
        train,
        seed=0,
        augment=None,
        rank=0,
        world_size=1,
        memory_format=torch.contiguous_format,
    ):
        self.x, self.y, self.batch_size, self.train = x, y, batch_size, train
        self.device, self.memory_format, self.seed = torch.device(device), memory_format, seed
        self.augment = augment or {}
        self.rank, self.world_size = rank, world_size
        self.mean, self.std = torch.tensor(mean, device=self.device), torch.tensor(std, device=self.device)

    def __len__(self) -> int:
        if self.train:  # whole global batches only: every rank takes the same number of steps
            return len(self.y) // (self.batch_size * self.world_size)
        return -(-len(range(self.rank, len(self.y), self.world_size)) // self.batch_size)

    def epoch(self, epoch: int, start: int = 0):
        """Batches `start`.. of `epoch`.

        Training: global batch i is the same set of samples, with the same augmentation, whatever
        the number of ranks (rank r takes its slice of it), so an N-rank run sees the batches of a
        1-process run and may resume with another world size. Evaluation: rank r takes every
        world_size-th sample, so the ranks together cover each sample exactly once.
        """
        b, r = self.batch_size, self.rank
        if not self.train:
            order = torch.arange(len(self.y))[r :: self.world_size]
            for i in range(start, len(self)):
                yield self._batch(order[i * b : (i + 1) * b], None)
            return
        order = torch.randperm(len(self.y), generator=_generator(self.seed, epoch))
        global_b = b * self.world_size
        for i in range(start, len(self)):
            idx = order[i * global_b : (i + 1) * global_b][r * b : (r + 1) * b]
            params = None
            if self.augment:
                a = self.augment
                drawn = draw_crop_flip(global_b, a["pad"], a["flip"], _generator(self.seed, epoch, i, 7))
                params = [t[r * b : (r + 1) * b] for t in drawn]
            yield self._batch(idx, params)

    def _batch(self, idx: torch.Tensor, augment_params) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[idx].to(self.device, non_blocking=True)
        if augment_params is not None:
            x = crop_flip(x, *augment_params, pad=self.augment["pad"], reflect=self.augment["reflect"])
        x = normalize(x, self.mean, self.std).contiguous(memory_format=self.memory_format)
        return x, self.y[idx].to(self.device, non_blocking=True)
