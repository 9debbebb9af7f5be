"""`sharenet eval`: a run directory or weight file measured on a test set, as training measured it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..errors import SharenetError
from ..rundir import CONFIG, WEIGHTS, RunDir
from ..weights import load
from ..weights.files import read_metadata
from .config import Config, apply, from_dict
from .data_setup import make_streams
from .device import pick_device, pick_dtype
from .plots import confusion_matrix
from .step import evaluate


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
