"""Every measurement of a model on held-out images, in one place: the evaluation pass (`evaluate`,
with flip TTA), a compressed student's start (`test_top1`), the held-out columns of an epoch's
row, summary.json's final evaluation, and `sharenet eval`, which measures as training did."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SharenetError
from ..rundir import CONFIG, WEIGHTS, RunDir
from ..weights import load
from ..weights.files import read_metadata
from . import distributed as dist
from .config import Config, apply, from_dict
from .data_setup import Streams, make_streams
from .device import autocast, pick_device, pick_dtype
from .distributed import say
from .plots import confusion_matrix
from .step import Trainer


@torch.no_grad()
def evaluate(
    model: nn.Module, batches, device: torch.device, dtype: torch.dtype, num_classes: int, tta: bool = False
) -> dict:
    """Loss, top-1, top-5 and the confusion matrix over every sample of `batches` (all ranks).

    `tta`: each image's logits averaged with its horizontal flip's (two forward passes).
    """
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    top1 = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    seen = torch.zeros((), dtype=torch.int64, device=device)
    k = min(5, num_classes)
    for x, y in batches:
        with autocast(device, dtype):
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.topk(k, 1).indices
        top1 += (pred[:, 0] == y).sum()
        top5 += (pred == y[:, None]).any(1).sum()
        confusion += torch.bincount(y * num_classes + pred[:, 0], minlength=num_classes**2)
        seen += len(y)
    for t in (loss, top1, top5, confusion, seen):
        dist.all_reduce_sum(t)
    model.train(was_training)
    n = max(1, int(seen))
    return {
        "loss": float(loss) / n,
        "top1": int(top1) / n,
        "top5": int(top5) / n,
        "samples": int(seen),
        "confusion": confusion.view(num_classes, num_classes).cpu(),
    }


def test_top1(model: nn.Module, streams: Streams, device: torch.device, dtype: torch.dtype) -> float:
    """Test top-1 of `model` as it is (a compressed student's start, its teacher)."""
    return evaluate(model, streams.test.epoch(0), device, dtype, len(streams.classes))["top1"]


def eval_model(trainer: Trainer):
    """EMA weights when kept; otherwise the plain module (no DDP, no compiled graph to re-trace)."""
    return trainer.ema.module if trainer.ema is not None else dist.unwrap(trainer.model)


def bad_images(streams: Streams) -> dict:
    """Training images skipped so far as undecodable (data.bad_images=skip; image folders only)."""
    count = getattr(streams.train, "bad_images", None)
    return {} if count is None else {"bad_images": count}


def held_out(trainer: Trainer, streams: Streams, tta: bool = False) -> dict:
    """val_loss/val_top1/val_top5 on the held-out training images ({} without data.val_split)."""
    if streams.val is None:
        return {}
    val = evaluate(eval_model(trainer), streams.val.epoch(0), trainer.device, trainer.dtype, len(streams.classes), tta)
    suffix = "_tta" if tta else ""
    return {f"val_{k}{suffix}": val[k] for k in ("loss", "top1", "top5")}


def final_evaluation(cfg: Config, trainer: Trainer, streams: Streams) -> dict:
    """summary.json's measurements: test (and val) of the saved weights; with TTA, the flip-averaged
    ones beside them; with an EMA, the live weights' test top-1 too, and a note when the EMA is worse."""
    model, n = eval_model(trainer), len(streams.classes)
    test = evaluate(model, streams.test.epoch(0), trainer.device, trainer.dtype, n)
    out = {
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "test_loss": test["loss"],
        "test_samples": test["samples"],
        **held_out(trainer, streams),
        **bad_images(streams),
    }
    if cfg.run.tta:
        tta = evaluate(model, streams.test.epoch(0), trainer.device, trainer.dtype, n, tta=True)
        out.update(
            {
                "test_top1_tta": tta["top1"],
                "test_top5_tta": tta["top5"],
                "test_loss_tta": tta["loss"],
                "tta_forward_passes": 2,
                **held_out(trainer, streams, tta=True),
            }
        )
    if trainer.ema is not None:
        live = evaluate(dist.unwrap(trainer.model), streams.test.epoch(0), trainer.device, trainer.dtype, n)
        out.update(
            {
                "ema_test_top1": test["top1"],
                "live_test_top1": live["top1"],
                "ema_below_live": test["top1"] < live["top1"],
            }
        )
        if streams.val is not None:
            live_val = evaluate(dist.unwrap(trainer.model), streams.val.epoch(0), trainer.device, trainer.dtype, n)
            out["live_val_top1"] = live_val["top1"]
        if out["ema_below_live"]:
            say(
                f"note: the EMA weights (saved, evaluated) score test top-1 {test['top1']:.4f}, below the live "
                f"weights' {live['top1']:.4f}; lower optim.ema_decay for a run this short"
            )
    return out


def resolve_source(path: str | Path) -> tuple[Path, Config, Path]:
    """(weights file, the config to evaluate with, directory for outputs) of a run dir or weight file."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        weights = run / WEIGHTS
        if not weights.is_file():
            raise SharenetError(f"{path} has no {WEIGHTS}: is it a finished sharenet run directory?")
        cfg = from_dict(run.read_json(CONFIG)) if (run / CONFIG).is_file() else Config()
        return weights, cfg, path
    if not path.is_file():
        raise SharenetError(f"{path} is neither a run directory nor a weight file")
    meta = read_metadata(path) or {}
    dataset = meta.get("extra", {}).get("dataset")
    cfg = apply(Config(), {"data.dataset": dataset}) if dataset else Config()
    return path, cfg, path.parent


def run_eval(
    source,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    tta: bool = False,
) -> tuple[dict, Path, tuple[str, ...]]:
    """The test-set measurement of a run or weight file; with `tta`, the flip-averaged one under "tta"."""
    weights, cfg, out_dir = resolve_source(source)
    overrides = {
        "data.dataset": dataset,
        "data.data_dir": data_dir,
        "run.device": device,
        "run.eval_batch_size": batch_size,
    }
    cfg = apply(cfg, {k: v for k, v in overrides.items() if v is not None})
    dev = pick_device(cfg.run.device)
    dtype = pick_dtype(cfg.run.precision, dev)
    streams = make_streams(replace(cfg, optim=replace(cfg.optim, batch_size=1)), dev)
    model = load(weights).to(dev)
    if cfg.run.channels_last:
        model.to(memory_format=torch.channels_last)
    if model.config["num_classes"] != len(streams.classes):
        raise SharenetError(
            f"{weights} predicts {model.config['num_classes']} classes, {cfg.data.dataset} has {len(streams.classes)}"
        )
    result = evaluate(model, streams.test.epoch(0), dev, dtype, len(streams.classes))
    if tta:
        result["tta"] = evaluate(model, streams.test.epoch(0), dev, dtype, len(streams.classes), tta=True)
    return result, out_dir, streams.classes


def per_class(confusion: torch.Tensor, classes) -> dict[str, float]:
    totals = confusion.sum(1).tolist()
    return {c: int(confusion[i, i]) / max(1, totals[i]) for i, c in enumerate(classes)}


def plot_confusion(result: dict, classes, path: Path, title: str) -> Path:
    return confusion_matrix(result["confusion"], list(classes), path, title)
