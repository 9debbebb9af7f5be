"""Does an exported or quantized model compute what the eager one does? Measured on real test images."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data import load_memory_dataset
from ..data.preprocess import Preprocess, normalize
from ..errors import SharenetError


def dataset_images(
    meta: dict, split: str = "test", limit: int | None = None, data_dir: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of the run's built-in data set, preprocessed as at training time.

    The test split in order; the training split (calibration) as a fixed random sample.
    """
    extra = meta.get("extra") or {}
    dataset, recorded = extra.get("dataset"), extra.get("preprocess")
    if not dataset or dataset == "imagefolder" or not recorded:
        raise SharenetError(
            f"no built-in test set recorded for this model (dataset {dataset or 'unknown'}); "
            "check it with images of your own: --images FILES_OR_FOLDERS"
        )
    data = load_memory_dataset(dataset, data_dir, False)
    pre = Preprocess.from_dict(recorded)
    if split == "test":
        x, y = data.test_x[:limit], data.test_y[:limit]
    else:
        pick = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:limit]
        x, y = data.train_x[pick], data.train_y[pick]
    return normalize(x, pre.mean, pre.std), y


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch]).float() for i in range(0, len(x), batch)])


def compare(reference: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """Largest logit difference (absolute, and relative to the logits' scale) and top-1 agreement."""
    diff = (logits - reference).abs().max().item()
    scale = reference.abs().max().item()
    out = {
        "images": len(reference),
        "max_abs_diff": diff,
        "logit_scale": scale,
        "relative_diff": diff / max(scale, 1e-12),
        "top1_agreement": (logits.argmax(1) == reference.argmax(1)).float().mean().item(),
    }
    if labels is not None:
        out["top1"] = (logits.argmax(1) == labels).float().mean().item()
        out["reference_top1"] = (reference.argmax(1) == labels).float().mean().item()
    return out
