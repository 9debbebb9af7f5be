"""Readers on real data in their official layouts; batched augmentation; deterministic order."""

import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sharenet.data import BatchStream, DataError, image_folders, load_memory_dataset
from sharenet.data.cifar import load_cifar
from sharenet.data.fashion_mnist import load_fashion_mnist
from sharenet.data.memory import random_crop_flip
from sharenet.deploy.check import dataset_images
from sharenet.engine.config import Config, apply
from sharenet.engine.data_setup import make_streams

from .datasets import cifar_pickles, foolbox_images


def test_fashion_mnist_subset_is_real(fmnist_dir):
    data = load_fashion_mnist(str(fmnist_dir), allow_download=False)
    assert data.train_x.shape == (2560, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (1000, 1, 28, 28)
    assert set(data.train_y.tolist()) == set(range(10)) and data.classes[9] == "Ankle boot"
    mean, std = data.channel_stats()
    assert 0.25 < mean[0] < 0.32 and 0.32 < std[0] < 0.38  # the full set's 0.286 / 0.353


def test_fashion_mnist_search_order_and_clear_failure(fmnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SHARENET_DATA", str(fmnist_dir.parent))
    nested = tmp_path / "fashion-mnist"
    nested.mkdir()
    for f in fmnist_dir.iterdir():
        (nested / f.name).write_bytes(f.read_bytes())
    assert load_fashion_mnist(str(tmp_path), allow_download=False).source == str(nested)
    monkeypatch.delenv("SHARENET_DATA")
    monkeypatch.setattr("sharenet.data.fashion_mnist.SYSTEM_DIR", str(tmp_path / "none"))
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path / "empty"), allow_download=False)


def test_download_failure_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARENET_DATA", str(tmp_path))
    monkeypatch.setattr("sharenet.data.fashion_mnist.SYSTEM_DIR", str(tmp_path / "none"))
    monkeypatch.setattr("sharenet.data.fashion_mnist.URL", "http://127.0.0.1:9/")  # nothing listens: refused
    with pytest.raises(DataError, match="could not download.*dataset-fashion-mnist"):
        load_fashion_mnist(None)


def test_truncated_idx_is_named(fmnist_dir, tmp_path):
    for f in fmnist_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    raw = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-1000]))
    with pytest.raises(DataError, match="truncated"):
        load_fashion_mnist(str(tmp_path), allow_download=False)


def test_cifar10_reader_gives_the_real_pixels(cifar10_dir):
    root, images = cifar10_dir
    data = load_cifar("cifar10", str(root), allow_download=False)
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    assert torch.equal(data.test_x[7].permute(1, 2, 0), torch.from_numpy(images[7][0]))
    assert data.test_y.tolist() == [label for _, label in images]
    assert data.train_x.shape[0] == 20  # five batches concatenated in order


def test_cifar100_reader_uses_fine_labels(tmp_path):
    root, images = cifar_pickles(tmp_path, "cifar100")
    data = load_memory_dataset("cifar100", str(root), allow_download=False)
    assert data.test_y.tolist() == [label for _, label in images] and len(data.classes) == 100


def test_cifar_reader_refuses_code_in_pickles(tmp_path, cifar10_dir):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for f in (cifar10_dir[0] / "cifar-10-batches-py").iterdir():
        (root / f.name).write_bytes(f.read_bytes())
    (root / "test_batch").write_bytes(pickle.dumps({b"data": print, b"labels": []}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_cifar("cifar10", str(tmp_path), allow_download=False)


def test_image_folders_train_and_eval_transforms(imagenet_dir):
    train, val = image_folders(str(imagenet_dir), seed=3)
    assert len(train) == len(val) == 20 and train.classes == val.classes
    x, _ = val[0]
    assert x.shape == (3, 224, 224) and torch.equal(val[0][0], x)  # evaluation is deterministic
    t1, _ = train[0]
    train.epoch = 1
    t2, _ = train[0]
    assert t1.shape == (3, 224, 224) and not torch.equal(t1, t2)  # new augmentation each epoch
    train.epoch = 0
    assert torch.equal(train[0][0], t1)  # ...and repeatable for a resumed epoch
    assert foolbox_images("imagenet")[0][0].shape[2] == 3


def test_crop_and_flip_move_pixels_not_values():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    same = random_crop_flip(x, pad=0, flip=False, reflect=False, gen=torch.Generator().manual_seed(0))
    assert torch.equal(same, x)
    out = random_crop_flip(x, pad=2, flip=True, reflect=False, gen=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0}
    flipped = random_crop_flip(x, pad=0, flip=True, reflect=False, gen=torch.Generator().manual_seed(2))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(2)) for f, o in zip(flipped, x, strict=True))


def _stream(x, y, **kw):
    opts = {"mean": [0.5], "std": [0.25], "device": "cpu", "seed": 5, "train": True}
    return BatchStream(x, y, 8, **{**opts, **kw})


def test_epoch_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    x = torch.randint(0, 255, (64, 1, 6, 6), dtype=torch.uint8)
    y = torch.arange(64)
    stream = _stream(x, y, augment={"pad": 1, "flip": True, "reflect": False})
    full = list(stream.epoch(2))
    resumed = list(_stream(x, y, augment={"pad": 1, "flip": True, "reflect": False}).epoch(2, start=5))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[5:], resumed, strict=True))
    assert sorted(torch.cat([b[1] for b in full]).tolist()) == list(range(64))
    assert not torch.equal(full[0][1], next(iter(stream.epoch(3)))[1])


def test_ranks_read_disjoint_shards_and_evaluation_covers_each_sample_once():
    x, y = torch.zeros(45, 1, 2, 2, dtype=torch.uint8), torch.arange(45)
    train = [torch.cat([b[1] for b in _stream(x, y, rank=r, world_size=2).epoch(0)]) for r in (0, 1)]
    assert not set(train[0].tolist()) & set(train[1].tolist()) and len(train[0]) == len(train[1]) == 16
    test = [torch.cat([b[1] for b in _stream(x, y, rank=r, world_size=2, train=False).epoch(0)]) for r in (0, 1)]
    assert sorted(torch.cat(test).tolist()) == list(range(45))


def test_normalisation_uses_the_given_statistics():
    x, y = torch.full((8, 1, 2, 2), 191, dtype=torch.uint8), torch.zeros(8, dtype=torch.long)
    batch, _ = next(iter(_stream(x, y, train=False).epoch(0)))
    assert np.allclose(batch.numpy(), (191 / 255 - 0.5) / 0.25, atol=1e-5)


def test_predict_check_and_evaluation_see_the_same_tensor_for_the_same_file(fmnist_dir, imagenet_dir, tmp_path):
    """One `normalize`: an image reaches the network as the same tensor whether evaluation's stream,
    `--check`'s images or `predict`'s recorded Preprocess reads it (a Fashion-MNIST test image saved
    as PNG; ImageNet JPEGs, one already at 224 x 224, which evaluation still resizes and crops)."""
    cfg = apply(Config(), {"data.data_dir": str(fmnist_dir), "run.channels_last": False, "run.eval_batch_size": 16})
    streams = make_streams(cfg, torch.device("cpu"))
    evaluated, _ = next(iter(streams.test.epoch(0)))
    data = load_fashion_mnist(str(fmnist_dir), allow_download=False)
    path = tmp_path / "fmnist-5.png"
    Image.fromarray(data.test_x[5, 0].numpy()).save(path)
    meta = {"extra": {"dataset": "fashion-mnist", "preprocess": streams.preprocess.to_dict()}}
    checked, _ = dataset_images(meta, limit=16, data_dir=str(fmnist_dir))
    assert torch.equal(streams.preprocess.image(path), evaluated[5]) and torch.equal(checked, evaluated)

    folders = tmp_path / "folders"
    for split in ("train", "val"):
        (folders / split / "a").mkdir(parents=True)
    jpeg = sorted(imagenet_dir.glob("val/*/*.jpg"))[0]
    with Image.open(jpeg) as img:
        img.crop((0, 0, 224, 224)).save(folders / "val" / "a" / "small.png")
    for split in ("train", "val"):
        shutil.copy(jpeg, folders / split / "a" / "large.jpg")
    cfg = apply(
        Config(),
        {"data.dataset": "imagefolder", "data.data_dir": str(folders), "data.workers": 0, "run.channels_last": False},
    )
    streams = make_streams(cfg, torch.device("cpu"))
    evaluated, _ = next(iter(streams.test.epoch(0)))  # large.jpg, small.png: sorted by name
    for i, name in enumerate(("large.jpg", "small.png")):
        assert torch.equal(streams.preprocess.image(folders / "val" / "a" / name), evaluated[i]), name
