"""Fashion-MNIST (Xiao et al. 2017) from its four gzipped IDX files, as uint8 tensors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .memory import InMemoryData
from .sources import DataError, cache_dir, candidate_dirs, download, find_dir

SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # the publisher's MD5s (as torchvision checks them)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
HINT = (
    "install the Debian package dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist), "
    "or put the four *-ubyte.gz files in --data-dir or $SHARENET_DATA/fashion-mnist"
)


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format): magic, dims, then big-endian data."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is unreadable or truncated ({e}); {HINT}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {data.size} of {int(np.prod(dims))} values")
    return data.reshape(dims)


def locate(data_dir: str | None, allow_download: bool = True) -> Path:
    dirs = candidate_dirs(data_dir, ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"), (SYSTEM_DIR,))
    found = find_dir(dirs, tuple(FILES))
    if found:
        return found
    if not allow_download:
        raise DataError(f"Fashion-MNIST not found in {', '.join(map(str, dirs))}; {HINT}")
    return download(FILES, URL, cache_dir("fashion-mnist"), HINT)


def load_fashion_mnist(data_dir: str | None = None, allow_download: bool = True) -> InMemoryData:
    root = locate(data_dir, allow_download)

    def pair(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
        if len(x) != len(y):
            raise DataError(f"{root}: {len(x)} {prefix} images but {len(y)} labels")
        return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))

    (train_x, train_y), (test_x, test_y) = pair("train"), pair("t10k")
    return InMemoryData("fashion-mnist", train_x, train_y, test_x, test_y, CLASSES, str(root))
