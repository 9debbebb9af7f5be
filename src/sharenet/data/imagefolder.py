"""ImageNet-style folders (train/<class>/*.jpg, val/<class>/*.jpg) with fb.resnet.torch's transforms.

Training: random-resized crop (8%-100% of the area, aspect 3/4-4/3), horizontal flip, colour
jitter (brightness, contrast, saturation 0.4) and AlexNet PCA lighting (std 0.1). Evaluation:
resize the short side to 256, centre crop 224. Decoding runs in DataLoader workers; each
sample's randomness derives from (seed, epoch, index), so a resumed run repeats it exactly.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .sources import DataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def scan(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, class index) pairs of a class-per-folder tree; class order is sorted folder names."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist (expected {root}/<class>/<image>)")
    classes = classes or sorted(d.name for d in root.iterdir() if d.is_dir())
    samples = [
        (f, i) for i, c in enumerate(classes) if (root / c).is_dir()
        for f in sorted((root / c).iterdir()) if f.suffix.lower() in EXTENSIONS
    ]  # fmt: skip
    if not samples:
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under {root}/<class>/")
    return samples, classes


def random_resized_crop(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    return center_crop(img, size, size)  # fallback, as torchvision does


def center_crop(img: Image.Image, resize: int, size: int) -> Image.Image:
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def color_jitter(x: torch.Tensor, rng: random.Random, strength: float = 0.4) -> torch.Tensor:
    """fb.resnet.torch ColorJitter on a (3, H, W) float image in [0, 1], in random order."""
    ops = ["brightness", "contrast", "saturation"]
    rng.shuffle(ops)
    for op in ops:
        alpha = 1.0 + rng.uniform(-strength, strength)
        blend = {"brightness": torch.zeros_like(x), "contrast": _gray(x).mean().expand_as(x), "saturation": _gray(x)}
        x = x * alpha + blend[op].expand_as(x) * (1 - alpha)
    return x


def lighting(x: torch.Tensor, rng: random.Random, std: float = 0.1) -> torch.Tensor:
    alpha = torch.tensor([rng.gauss(0, std) for _ in range(3)])
    return x + (EIGVEC @ (alpha * EIGVAL)).view(3, 1, 1)


class ImageFolder(torch.utils.data.Dataset):
    def __init__(self, root: Path, train: bool, size: int = 224, resize: int = 256, seed: int = 0,
                 classes: list[str] | None = None):  # fmt: skip
        self.samples, self.classes = scan(Path(root), classes)
        self.train, self.size, self.resize, self.seed, self.epoch = train, size, resize, seed, 0
        self.mean, self.std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as f:
                img = f.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        rng = random.Random(hash((self.seed, self.epoch, index)))
        if self.train:
            img = random_resized_crop(img, self.size, rng)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = center_crop(img, self.resize, self.size)
        x = torch.from_numpy(np.asarray(img, np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        if self.train:
            x = lighting(color_jitter(x, rng), rng)
        return (x - self.mean) / self.std, label


class FolderStream:
    """Same interface as memory.BatchStream, over an ImageFolder read by DataLoader workers."""

    def __init__(
        self,
        dataset: ImageFolder,
        batch_size: int,
        *,
        device,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 2,
        memory_format=torch.contiguous_format,
    ):
        self.dataset, self.batch_size, self.train, self.seed = dataset, batch_size, train, seed
        self.device, self.memory_format = torch.device(device), memory_format
        self.rank, self.world_size, self.workers = rank, world_size, workers

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.train:  # whole global batches, split across ranks as in memory.BatchStream
            return n // (self.batch_size * self.world_size)
        return -(-len(range(self.rank, n, self.world_size)) // self.batch_size)

    def _batches(self, epoch: int, start: int) -> list[list[int]]:
        b, r, n = self.batch_size, self.rank, len(self.dataset)
        if not self.train:
            order = list(range(r, n, self.world_size))
            return [order[i * b : (i + 1) * b] for i in range(start, len(self))]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)).tolist()
        global_b = b * self.world_size
        return [order[i * global_b + r * b : i * global_b + (r + 1) * b] for i in range(start, len(self))]

    def epoch(self, epoch: int, start: int = 0):
        self.dataset.epoch = epoch
        batches = self._batches(epoch, start)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )  # fmt: skip
        for x, y in loader:
            yield x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format), y.to(self.device)
