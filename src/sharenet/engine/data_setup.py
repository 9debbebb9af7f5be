"""The engine's view of data: a training and a test stream of normalised batches, per rank."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..data import BatchStream, FolderStream, image_folders, load_memory_dataset
from ..data.imagefolder import MEAN, STD
from ..data.preprocess import Preprocess
from .config import Config, ConfigError


@dataclass
class Streams:
    train: BatchStream | FolderStream
    test: BatchStream | FolderStream
    classes: tuple[str, ...]
    in_chans: int
    preprocess: Preprocess  # how the test images became tensors, recorded in the weight file
    val: BatchStream | None = None  # the held-out end of the training set (data.val_split)


def per_rank_batch(batch_size: int, world_size: int) -> int:
    if batch_size % world_size:
        raise ConfigError(f"optim.batch_size={batch_size} must divide evenly over {world_size} ranks")
    return batch_size // world_size


def make_streams(cfg: Config, device: torch.device, rank: int = 0, world_size: int = 1) -> Streams:
    d, r = cfg.data, cfg.run
    fmt = torch.channels_last if r.channels_last else torch.contiguous_format
    batch = per_rank_batch(cfg.optim.batch_size, world_size)
    common = {"device": device, "rank": rank, "world_size": world_size, "memory_format": fmt}
    if d.dataset == "imagefolder":
        if d.val_split:
            raise ConfigError("data.val_split applies to in-memory data sets; image folders have their own val/")
        train_set, test_set = image_folders(d.data_dir, r.seed)
        common = {**common, "bad_images": d.bad_images}  # FolderStream only: an undecodable image stops or is skipped
        return Streams(
            FolderStream(train_set, batch, train=True, seed=r.seed, workers=d.workers, **common),
            FolderStream(test_set, r.eval_batch_size, train=False, workers=d.workers, **common),
            tuple(train_set.classes),
            3,
            Preprocess(3, test_set.size, test_set.resize, MEAN, STD),
        )
    data = load_memory_dataset(d.dataset, d.data_dir, d.download)
    data, held_out = split_validation(data, d.val_split)
    mean, std = data.channel_stats()
    augment = {"pad": d.crop_pad, "flip": d.flip, "reflect": d.reflect_pad} if (d.crop_pad or d.flip) else None
    norm = {"mean": mean, "std": std}
    train = BatchStream(data.train_x, data.train_y, batch, train=True, seed=r.seed, augment=augment, **norm, **common)
    test = BatchStream(data.test_x, data.test_y, r.eval_batch_size, train=False, **norm, **common)
    if len(train) == 0:
        raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} exceeds the {len(data.train_y)} training images")
    val = BatchStream(*held_out, r.eval_batch_size, train=False, **norm, **common) if held_out else None
    side = data.test_x.shape[-1]
    preprocess = Preprocess(data.in_chans, side, side, tuple(mean), tuple(std))
    return Streams(train, test, data.classes, data.in_chans, preprocess, val)


def split_validation(data, n: int):
    """(data with the last n training images removed, (those images, their labels) or None)."""
    if not n:
        return data, None
    if n >= len(data.train_y):
        raise ConfigError(f"data.val_split={n} leaves no training images of {len(data.train_y)}")
    held_out = (data.train_x[-n:], data.train_y[-n:])
    return replace(data, train_x=data.train_x[:-n], train_y=data.train_y[:-n]), held_out
