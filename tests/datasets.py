"""Real data for tests, written in each reader's official on-disk layout.

Fashion-MNIST: a subset of the real IDX files of Debian's dataset-fashion-mnist (make test
installs it). CIFAR-10/100 and ImageNet: the real test images that the foolbox wheel ships
(its data files only; foolbox is never imported), written as official CIFAR pickle batches and
as class folders.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
from PIL import Image

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
if not FMNIST_SYSTEM.is_dir() and os.environ.get("SHARENET_DATA"):  # a machine without the Debian package
    FMNIST_SYSTEM = Path(os.environ["SHARENET_DATA"]) / "fashion-mnist"


def _foolbox_data() -> Path:
    spec = importlib.util.find_spec("foolbox")
    assert spec is not None, "the foolbox wheel's data files are needed: pip install --no-deps foolbox==3.3.4"
    return Path(spec.origin).parent / "data"


def foolbox_images(prefix: str) -> list[tuple[np.ndarray, int]]:
    """(H, W, C) uint8 images and labels of foolbox/data/{prefix}_{index}_{label}.*, by index."""
    files = sorted(_foolbox_data().glob(f"{prefix}_[0-9][0-9]_*"))
    return [(np.array(Image.open(f).convert("RGB")), int(f.stem.split("_")[-1])) for f in files]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fashion_mnist_subset(target: Path, n_train: int, n_test: int) -> Path:
    """The first n_train / n_test real Fashion-MNIST images, as the four official IDX files."""
    from sharenet.data.fashion_mnist import read_idx

    assert FMNIST_SYSTEM.is_dir(), "install Debian's dataset-fashion-mnist (make test does) or set $SHARENET_DATA"
    target.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{kind}-ubyte.gz"
            write_idx(target / name, read_idx(FMNIST_SYSTEM / name)[:n])
    return target


def cifar_pickles(target: Path, dataset: str) -> tuple[Path, list[tuple[np.ndarray, int]]]:
    """The foolbox CIFAR test images in the official python-pickle layout (train = test = them)."""
    images = foolbox_images(dataset)
    data = np.stack([img.transpose(2, 0, 1).reshape(-1) for img, _ in images])  # (N, 3072): R, G, B planes
    labels = [label for _, label in images]
    if dataset == "cifar10":
        root = target / "cifar-10-batches-py"
        root.mkdir(parents=True)
        for i in range(5):
            part = slice(4 * i, 4 * i + 4)
            _dump(root / f"data_batch_{i + 1}", {b"data": data[part], b"labels": labels[part]})
        _dump(root / "test_batch", {b"data": data, b"labels": labels})
        _dump(root / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)]})
    else:
        root = target / "cifar-100-python"
        root.mkdir(parents=True)
        for name in ("train", "test"):
            _dump(root / name, {b"data": data, b"fine_labels": labels, b"coarse_labels": [0] * len(labels)})
        _dump(root / "meta", {b"fine_label_names": [f"class{i}".encode() for i in range(100)]})
    return target, images


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def imagenet_folders(target: Path) -> Path:
    """foolbox's ImageNet JPEGs as train/<label>/ and val/<label>/ folders (both hold all 20)."""
    for f in sorted(_foolbox_data().glob("imagenet_[0-9][0-9]_*")):
        label = f.stem.split("_")[-1]
        for split in ("train", "val"):
            (target / split / f"n{int(label):08d}").mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target / split / f"n{int(label):08d}" / f.name)
    return target
