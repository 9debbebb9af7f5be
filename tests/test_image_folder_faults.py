"""Damaged image folders, made from the real foolbox ImageNet JPEGs: each fault is one line naming it.

Scan-time faults (empty class folder, val-only class, zero-byte file) and a truncated JPEG go through
the real CLI with a DataLoader worker process; skipping and counting is checked on the stream itself.
"""

import json
import shutil

import pytest
import torch
from PIL import Image

from sharenet.data import DataError, FolderStream, image_folders

from .test_train_cli import sharenet_cli

SEED = 0


@pytest.fixture
def data_dir(imagenet_dir, tmp_path):
    """A private copy of the real sample folders, to damage."""
    return shutil.copytree(imagenet_dir, tmp_path / "data")


def first_training_image(root):
    """The image the first training batch reads first (seed SEED), so a fault there stops the run at once."""
    train, _ = image_folders(str(root), SEED)
    stream = FolderStream(train, 4, device="cpu", train=True, seed=SEED, workers=0)
    return train.samples[stream._batches(0, 0)[0][0]][0]


def truncate(path, keep_bytes=None):
    """Cut a real JPEG to its first half (or `keep_bytes`), and check that PIL indeed refuses it."""
    data = path.read_bytes()
    path.write_bytes(data[: keep_bytes or len(data) // 2])
    with pytest.raises(OSError), Image.open(path) as img:
        img.convert("RGB")
    return path


def train_cli(root, out, *extra):
    return sharenet_cli(
        "train",
        "--recipe",
        "imagenet-fb",
        "--model",
        "resnet18",
        "--data-dir",
        str(root),
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "run.eval_batch_size=10",
        "--set",
        "data.workers=1",
        "--set",
        f"run.seed={SEED}",
        *extra,
        check=False,
    )


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "DataLoader" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sharenet: error: ")
    return lines[0]


def empty_class_folder(root):
    (root / "train" / "n00000999").mkdir()
    return ["n00000999", "no images"]


def val_only_class(root):
    shutil.rmtree(root / "train" / "n00000243")
    return ["n00000243", "not training classes"]


def zero_byte_file(root):
    victim = next((root / "val").glob("*/*.jpg"))
    victim.write_bytes(b"")
    return [victim.name, "0-byte", "1 empty"]


@pytest.mark.parametrize("damage", [empty_class_folder, val_only_class, zero_byte_file])
def test_scan_faults_are_one_line_naming_them(data_dir, tmp_path, damage):
    words = damage(data_dir)
    line = one_line_error(train_cli(data_dir, tmp_path / "out"))
    assert all(w in line for w in words), line
    with pytest.raises(DataError) as caught:
        image_folders(str(data_dir))
    assert f"sharenet: error: {caught.value}" == line


def test_zero_byte_files_are_counted_and_the_first_few_named(data_dir):
    files = sorted((data_dir / "train").glob("*/*.jpg"))[:5]
    for f in files:
        f.write_bytes(b"")
    with pytest.raises(DataError, match=r"^5 empty \(0-byte\) image files under .* and 2 more;") as caught:
        image_folders(str(data_dir))
    named = [f for f in files if f"{f.parent.name}/{f.name}" in str(caught.value)]
    assert len(named) == 3


def test_truncated_jpeg_in_a_worker_stops_the_run_with_one_line(data_dir, tmp_path):
    victim = truncate(first_training_image(data_dir))
    line = one_line_error(train_cli(data_dir, tmp_path / "out"))
    assert line.startswith(f"sharenet: error: cannot decode image {victim} (") and "data.bad_images=skip" in line


def test_truncated_jpeg_is_skipped_when_asked(data_dir, tmp_path):
    truncate(first_training_image(data_dir))
    truncate(next((data_dir / "val").glob("*/*.jpg")), keep_bytes=200)
    proc = train_cli(data_dir, tmp_path / "out", "--set", "data.bad_images=skip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cannot decode" not in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["test_samples"] == 19 and summary["bad_images"] == 1  # the training image, counted once
    epochs = [json.loads(r) for r in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["bad_images"] for r in epochs if r["kind"] == "epoch"] == [1]


@pytest.mark.parametrize(("split", "batch_size", "workers"), [("train", 4, 1), ("val", 10, 1), ("train", 1, 0)])
def test_skipped_images_are_counted_in_the_main_process(data_dir, split, batch_size, workers):
    """Batch size 1 in training: a batch with nothing readable is replaced by the next readable image,
    since every step must still happen (resume positions and DDP ranks count steps)."""
    victim = truncate(next((data_dir / split).glob("*/*.jpg")))
    train, val = image_folders(str(data_dir), SEED)
    stream = FolderStream(
        train if split == "train" else val,
        batch_size,
        device="cpu",
        train=split == "train",
        seed=SEED,
        workers=workers,
        bad_images="skip",
    )
    batches = list(stream.epoch(0))
    assert len(batches) == len(stream) and stream.bad_images == 1 and stream.bad_files == [str(victim)]
    sizes = [len(y) for _, y in batches]
    assert sum(sizes) == 20 - (batch_size > 1) and all(x.shape[1:] == (3, 224, 224) for x, _ in batches)
    list(stream.epoch(1))
    assert stream.bad_images == 2  # cumulative: the file is read again next epoch


def test_unreadable_image_raises_one_line_from_the_stream_and_the_dataset(data_dir):
    victim = truncate(first_training_image(data_dir))
    train, _ = image_folders(str(data_dir), SEED)
    stream = FolderStream(train, 4, device="cpu", train=True, seed=SEED, workers=1)
    with pytest.raises(DataError, match=f"^cannot decode image {victim} ") as caught:
        next(stream.epoch(0))
    assert "\n" not in str(caught.value)
    index = next(i for i, (f, _) in enumerate(train.samples) if f == victim)
    with pytest.raises(DataError, match="image file is truncated"):
        train[index]
    assert isinstance(train[(index + 1) % len(train)][0], torch.Tensor)


def test_bad_images_mode_is_checked(data_dir):
    train, _ = image_folders(str(data_dir))
    with pytest.raises(ValueError, match="valid: error, skip"):
        FolderStream(train, 4, device="cpu", train=True, bad_images="ignore")
