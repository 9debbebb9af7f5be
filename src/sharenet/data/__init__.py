"""Data sets: Fashion-MNIST IDX, CIFAR pickles, image folders; in-memory batched augmentation."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidArgumentError
from .cifar import load_cifar
from .fashion_mnist import load_fashion_mnist
from .imagefolder import FolderStream, ImageFolder
from .memory import BatchStream, InMemoryData
from .sources import DataError

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder")


def load_memory_dataset(name: str, data_dir: str | None, allow_download: bool = True) -> InMemoryData:
    """The in-memory data sets (every one but imagefolder)."""
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, allow_download)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, data_dir, allow_download)
    raise InvalidArgumentError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")


def image_folders(data_dir: str | None, seed: int = 0) -> tuple[ImageFolder, ImageFolder]:
    """(train, val) of data_dir/train/<class>/ and data_dir/val/<class>/, checked when scanned.

    The classes are train/'s folders; val/ is read with them, so a class folder in val/ that train/
    lacks is a DataError naming it (its images would silently drop out of the measurement), while a
    class without a val/ folder is allowed. Empty class folders and zero-byte image files in either
    are DataErrors naming them; an image that fails to decode is FolderStream's business.
    """
    if not data_dir:
        raise DataError("dataset imagefolder needs --data-dir holding train/<class>/ and val/<class>/")
    train = ImageFolder(Path(data_dir) / "train", train=True, seed=seed)
    val = ImageFolder(Path(data_dir) / "val", train=False, classes=train.classes)
    return train, val


__all__ = [
    "DATASETS",
    "BatchStream",
    "DataError",
    "FolderStream",
    "ImageFolder",
    "InMemoryData",
    "image_folders",
    "load_memory_dataset",
]
