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


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, reflect: bool, gen: torch.Generator) -> torch.Tensor:
    """Random pad-and-crop and horizontal flip of a whole uint8 batch in a few tensor ops."""
    n, _, h, w = x.shape
    if pad:
        mode = "reflect" if reflect else "constant"
        padded = F.pad(x.float() if reflect else x, (pad, pad, pad, pad), mode=mode)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)).to(x.device)  # (N, H)
        cols = (dx[:, None] + torch.arange(w)).to(x.device)  # (N, W)
        idx = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


class BatchStream:
    """Iterates (images, labels) batches of one epoch, from any step, for one rank's shard.

    Images leave as normalised float tensors on `device` in `memory_format`.
    """

    def __init__(self, x, y, batch_size, *, mean, std, device, train, seed=0, augment=None,
                 rank=0, world_size=1, memory_format=torch.contiguous_format):  # fmt: skip
        self.x, self.y, self.batch_size, self.train = x, y, batch_size, train
        self.device, self.memory_format, self.seed = torch.device(device), memory_format, seed
        self.augment = augment or {}
        self.rank, self.world_size = rank, world_size
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255

    def __len__(self) -> int:
        n = len(self.y) // self.world_size if self.train else len(self._shard(torch.arange(len(self.y))))
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _shard(self, order: torch.Tensor) -> torch.Tensor:
        if self.train:  # equal shards: drop the remainder so every rank takes the same number of steps
            per_rank = len(order) // self.world_size
            return order[self.rank * per_rank : (self.rank + 1) * per_rank]
        return order[self.rank :: self.world_size]  # evaluation: every sample exactly once

    def epoch(self, epoch: int, start: int = 0):
        """Batches `start`.. of `epoch`; the order depends on (seed, epoch) only."""
        if self.train:
            order = self._shard(torch.randperm(len(self.y), generator=_generator(self.seed, epoch)))
        else:
            order = self._shard(torch.arange(len(self.y)))
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.x[idx].to(self.device, non_blocking=True)
            if self.train and self.augment:
                x = random_crop_flip(x, gen=_generator(self.seed, epoch, i, 7), **self.augment)
            x = ((x.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)
            yield x, self.y[idx].to(self.device, non_blocking=True)
