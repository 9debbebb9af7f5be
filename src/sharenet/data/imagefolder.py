"""ImageNet-style folders (train/<class>/*.jpg, val/<class>/*.jpg) with fb.resnet.torch's transforms.

Training: random-resized crop (8%-100% of the area, aspect 3/4-4/3), horizontal flip, colour
jitter (brightness, contrast, saturation 0.4) and AlexNet PCA lighting (std 0.1). Evaluation:
resize the short side to 256, centre crop 224. Decoding runs in DataLoader workers; each
sample's randomness derives from (seed, epoch, index), so a resumed run repeats it exactly.

Faults are found where they are cheapest to explain: the scan refuses empty class folders, zero-byte
files and evaluation classes unknown to training; an image that fails to decode travels from the worker
as data (`Unreadable`), so the main process can stop with one line naming it or skip and count it.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from ..errors import InvalidArgumentError
from .preprocess import EXTENSIONS, center_crop, normalize, pixels
from .sources import DataError

BAD_IMAGES = ("error", "skip")  # what an image that fails to decode does: stop the run, or be skipped and counted
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def scan(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, class index) pairs of a class-per-folder tree; class order is sorted folder names.

    Refused, by name, because each would otherwise pass silently: a class folder without images (it
    would become a class no image teaches), zero-byte image files (an interrupted copy), and, when
    `classes` is given (evaluation folders take the training classes), a folder outside them (its
    images would be dropped from the evaluation).
    """
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist (expected {root}/<class>/<image>)")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    if classes is not None and (unknown := sorted(set(folders) - set(classes))):
        raise DataError(
            f"class folders in {root} that are not training classes: {listing(unknown)}; "
            "a model cannot learn a class it never sees: add them to train/ or remove them"
        )
    classes = folders if classes is None else classes
    files = {i: image_files(root / c) for i, c in enumerate(classes) if (root / c).is_dir()}
    if empty := [str(root / classes[i]) for i, found in files.items() if not found]:
        raise DataError(
            f"class folders with no images ({', '.join(EXTENSIONS)}): {listing(empty)}; "
            "add images or remove the folders"
        )
    if zero := [f.relative_to(root) for found in files.values() for f, size in found if size == 0]:
        raise DataError(
            f"{len(zero)} empty (0-byte) image files under {root}: {listing(zero)}; copy them again or delete them"
        )
    samples = [(f, i) for i, found in files.items() for f, _ in found]
    if not samples:
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under {root}/<class>/")
    return samples, classes


def image_files(folder: Path) -> list[tuple[Path, int]]:
    """(image file, size in bytes) in name order; one stat per file, which the zero-byte check needs anyway."""
    with os.scandir(folder) as entries:
        found = [
            (Path(e.path), e.stat().st_size)
            for e in entries
            if e.is_file() and os.path.splitext(e.name)[1].lower() in EXTENSIONS
        ]
    return sorted(found)


def listing(items: list, first: int = 3) -> str:
    """The first few items and how many more: a one-line message stays readable for a thousand."""
    more = f" and {len(items) - first} more" if len(items) > first else ""
    return ", ".join(str(x) for x in items[:first]) + more


class Unreadable(NamedTuple):
    """An image that failed to decode, returned by a worker as data: an exception raised there reaches
    the main process inside torch's multi-line worker traceback."""

    path: str
    reason: str

    def error(self) -> DataError:
        return DataError(
            f"cannot decode image {self.path} ({self.reason}); replace or delete it, "
            "or set data.bad_images=skip to skip unreadable images"
        )


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
    def __init__(
        self,
        root: Path,
        train: bool,
        size: int = 224,
        resize: int = 256,
        seed: int = 0,
        classes: list[str] | None = None,
    ):
        self.root = Path(root)
        self.samples, self.classes = scan(self.root, classes)
        self.train, self.size, self.resize, self.seed, self.epoch = train, size, resize, seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.read(index)
        if isinstance(item, Unreadable):
            raise item.error()
        return item

    def read(self, index: int) -> tuple[torch.Tensor, int] | Unreadable:
        """The sample, or what made its file unreadable."""
        path, label = self.samples[index]
        try:
            with Image.open(path) as f:
                img = f.convert("RGB")
        except Exception as e:  # whatever PIL raises while decoding this one file makes that file unreadable
            return Unreadable(str(path), " ".join(str(e).split()) or type(e).__name__)
        return self.transform(img, index), label

    def transform(self, img: Image.Image, index: int) -> torch.Tensor:
        rng = random.Random(hash((self.seed, self.epoch, index)))
        if self.train:
            img = random_resized_crop(img, self.size, rng)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = center_crop(img, self.resize, self.size)
        x = pixels(img)
        if self.train:  # colour augmentation works in [0, 1]
            x = lighting(color_jitter(x.float().div_(255), rng), rng)
        return normalize(x, MEAN, STD)


class Lenient(torch.utils.data.Dataset):
    """The DataLoader's view of an ImageFolder: an unreadable image is an item, not a worker exception."""

    def __init__(self, folder: ImageFolder):
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | Unreadable:
        return self.folder.read(index)


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor, list[Unreadable]]:
    """(images, labels, unreadable): failed items leave the batch, which shrinks, and travel beside it to
    the main process, where worker processes' counts could not reach otherwise."""
    good = [item for item in items if not isinstance(item, Unreadable)]
    x = torch.stack([image for image, _ in good]) if good else torch.empty(0)
    y = torch.tensor([label for _, label in good], dtype=torch.int64)
    return x, y, [item for item in items if isinstance(item, Unreadable)]


class FolderStream:
    """Same interface as memory.BatchStream, over an ImageFolder read by DataLoader workers.

    `bad_images`: an image that fails to decode stops the epoch with a DataError naming it ("error"), or
    is dropped from its batch ("skip") and counted in `self.bad_images`, cumulative over every epoch this
    stream reads (a file read in three epochs counts three times); `self.bad_files` keeps the first few.
    """

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
        bad_images: str = "error",
    ):
        if bad_images not in BAD_IMAGES:
            raise InvalidArgumentError(f"bad_images={bad_images!r}; valid: {', '.join(BAD_IMAGES)}")
        self.dataset, self.batch_size, self.train, self.seed = dataset, batch_size, train, seed
        self.device, self.memory_format = torch.device(device), memory_format
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.on_bad_image, self.bad_images, self.bad_files = bad_images, 0, []

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
            Lenient(self.dataset),
            batch_sampler=batches,
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for indices, (x, y, unreadable) in zip(batches, loader, strict=True):
            self._account(unreadable)
            if not len(y) and not self.train:  # nothing readable to measure
                continue
            if not len(y):  # the step must still happen: resume positions and DDP ranks count steps
                x, y = self._substitute(indices[0])
            yield x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format), y.to(self.device)

    def _account(self, unreadable: list[Unreadable]) -> None:
        if unreadable and self.on_bad_image == "error":
            raise unreadable[0].error()
        self.bad_images += len(unreadable)
        self.bad_files += [u.path for u in unreadable][: 10 - len(self.bad_files)]

    def _substitute(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next readable image after `index`, alone, for a training batch none of whose images decoded."""
        n = len(self.dataset)
        for k in range(1, n):
            item = self.dataset.read((index + k) % n)
            if not isinstance(item, Unreadable):
                return item[0][None], torch.tensor([item[1]])
        raise DataError(f"no image under {self.dataset.root} can be decoded")
