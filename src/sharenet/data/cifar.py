"""CIFAR-10/100 from the official "python version" pickle batches.

The batches are pickles; they are read with an unpickler that admits only numpy arrays, so a
foreign file cannot run code.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .memory import InMemoryData
from .sources import DataError, cache_dir, candidate_dirs, download, find_dir

LAYOUT = {  # dir, train files, test file, meta file, label key, names key, archive, archive md5
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        "test",
        "meta",
        b"fine_labels",
        b"fine_label_names",
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}
URL = "https://www.cs.toronto.edu/~kriz/"
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes inside protocol-2 pickles written by Python 3
}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _NumpyOnly(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise DataError(f"{path} is not a readable CIFAR batch ({e})") from None


def _hint(dataset: str) -> str:
    folder, archive = LAYOUT[dataset][0], LAYOUT[dataset][6]
    return f"download {URL}{archive}, extract it and pass --data-dir to the directory holding {folder}/"


def locate(dataset: str, data_dir: str | None, allow_download: bool = True) -> Path:
    folder, train, test, meta, *_, archive, md5 = LAYOUT[dataset]
    dirs = candidate_dirs(data_dir, (folder, f"{dataset}/{folder}"))
    found = find_dir(dirs, (*train, test, meta))
    if found:
        return found
    if not allow_download:
        raise DataError(f"{dataset} not found in {', '.join(map(str, dirs))}; {_hint(dataset)}")
    target = download({archive: md5}, URL, cache_dir(dataset), _hint(dataset))
    with tarfile.open(target / archive) as tar:
        tar.extractall(target, filter="data")
    return target / folder


def load_cifar(dataset: str, data_dir: str | None = None, allow_download: bool = True) -> InMemoryData:
    root = locate(dataset, data_dir, allow_download)
    _, train, test, meta, label_key, names_key, *_ = LAYOUT[dataset]

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [read_batch(root / f) for f in files]
        try:
            x = np.concatenate([np.asarray(b[b"data"], np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
            y = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
        except (KeyError, ValueError) as e:
            raise DataError(f"{root} does not hold {dataset} batches ({e!r})") from None
        return torch.from_numpy(x), torch.from_numpy(y)

    (train_x, train_y), (test_x, test_y) = read(train), read([test])
    names = tuple(n.decode() for n in read_batch(root / meta)[names_key])
    return InMemoryData(dataset, train_x, train_y, test_x, test_y, names, str(root))
