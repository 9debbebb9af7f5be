"""How an image becomes the network's input: one `normalize` for training, evaluation, `--check`
and `predict`, and the `Preprocess` a run records in its weight file so that prediction needs
nothing else.

Training records how its images became tensors (channels, resize of the short side, centre crop,
per-channel mean and std) and the class names; `sharenet predict` reads them back from a
.safetensors or .onnx file and applies the same steps to PNG/JPEG files. Fashion-MNIST and CIFAR
images are already at the model's size (resize and crop leave them unchanged); image folders use
the evaluation transform of training (short side 256, centre crop 224).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import SharenetError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x / 255 - mean) / std per channel (channels at dim -3), as float32.

    `x`: pixel values, uint8 in 0..255, or float already in [0, 1] (after colour augmentation).
    Every path from pixels to the network goes through here, so the same image gives the same
    tensor in training, evaluation, `--check` and `predict` (a test holds them to it).
    """
    x = x.float().div_(255) if not x.is_floating_point() else x
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return (x - mean).div_(std)


def center_crop(img: Image.Image, resize: int, size: int) -> Image.Image:
    """The evaluation transform: the short side resized to `resize`, then the centre size x size."""
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def pixels(img: Image.Image) -> torch.Tensor:
    """(channels, H, W) uint8 tensor of a decoded image."""
    x = torch.from_numpy(np.asarray(img, np.uint8).copy())
    return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes the model's input (what the run's test stream did)."""

    channels: int  # 1: greyscale ("L"), 3: RGB
    size: int  # side of the square input
    resize: int  # the short side is resized to this, then the centre size x size is cropped
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(int(d["channels"]), int(d["size"]), int(d["resize"]), tuple(d["mean"]), tuple(d["std"]))

    def to_dict(self) -> dict:
        return asdict(self)

    def image(self, path: Path) -> torch.Tensor:
        """(channels, size, size) float tensor of one image file, normalised."""
        try:
            with Image.open(path) as f:
                img = f.convert("L" if self.channels == 1 else "RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise SharenetError(f"cannot read image {path}: {e}") from None
        return normalize(pixels(center_crop(img, self.resize, self.size)), self.mean, self.std)

    def batch(self, paths: list[Path]) -> torch.Tensor:
        return torch.stack([self.image(p) for p in paths])


def image_files(items: list[str]) -> list[Path]:
    """Image files named directly or found under folders (sorted), each once, in the order given."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise SharenetError(f"{path} is neither an image file nor a folder")
    if not found:
        raise SharenetError(f"no images ({', '.join(EXTENSIONS)}) in {', '.join(items)}")
    return list(dict.fromkeys(found))
