"""`fit(config)`: the training entry point, a short composition of named steps."""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..models import count_params, create_model
from ..weights import save
from . import distributed as dist
from .checkpoint import find_latest, load_checkpoint, save_checkpoint
from .config import Config, ConfigError
from .data_setup import Streams, make_streams
from .device import environment, pick_device, pick_dtype
from .ema import WeightEMA
from .loop import Trainer, evaluate
from .optim import build_optimizer, build_scheduler
from .plots import training_curves
from .runlog import RunDir, default_out
from .validate import check_config, check_resume_compatible


@dataclass
class Position:
    """Where training stands: the next optimizer step, and the epoch and batch it belongs to."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    sums: dict = field(default_factory=lambda: {"loss": 0.0, "correct": 0, "seen": 0})  # this epoch so far


def fit(cfg: Config, resume: str | None = None) -> dict:
    """Train `cfg`, writing the run directory; returns summary.json's content."""
    check_config(cfg)
    device = dist.init(pick_device(cfg.run.device).type) or pick_device(cfg.run.device)
    try:
        return _fit(cfg, resume, device)
    finally:
        dist.shutdown()


def _fit(cfg: Config, resume: str | None, device: torch.device) -> dict:
    dtype = pick_dtype(cfg.run.precision, device)
    run = open_run_dir(cfg, resume)
    found = resume_state(run, resume, cfg)
    torch.manual_seed(cfg.run.seed)
    random.seed(cfg.run.seed)
    streams = make_streams(cfg, device, dist.rank(), dist.world_size())
    model = build_model(cfg, streams, device)
    trainer = build_trainer(cfg, model, device, dtype, len(streams.train))
    pos = restore(run, found, trainer)
    env = environment(device, dtype, cfg.run.channels_last)
    if run:
        run.write_config({**cfg.to_dict(), "world_size": dist.world_size()}, env)
    t0 = time.perf_counter()
    img_per_s = train(cfg, trainer, streams, run, pos)
    return finish(cfg, trainer, streams, run, pos, time.perf_counter() - t0, img_per_s)


def open_run_dir(cfg: Config, resume: str | None) -> RunDir | None:
    """Rank 0's run directory; refuses to overwrite a run unless resuming it."""
    if not dist.is_main():
        return None
    out = Path(cfg.run.out) if cfg.run.out else default_out(cfg.model.name, cfg.model.share)
    run = RunDir(out)
    if run.has_run() and resume is None:
        raise ConfigError(f"{out} already holds a run; pass --resume auto to continue it, or another --out")
    if resume and resume != "auto" and not cfg.run.out and Path(resume).is_dir():
        run = RunDir(resume)
    return run


def build_model(cfg: Config, streams: Streams, device: torch.device) -> torch.nn.Module:
    m = cfg.model
    model = create_model(m.name, share=m.share, num_classes=len(streams.classes), in_chans=streams.in_chans,
                         shortcut=m.shortcut, dropout=m.dropout)  # fmt: skip
    model.to(device)
    if cfg.run.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_trainer(cfg: Config, model, device, dtype, steps_per_epoch: int) -> Trainer:
    o = cfg.optim
    optimizer = build_optimizer(model, o)
    scheduler = build_scheduler(optimizer, o, steps_per_epoch)
    ema = WeightEMA(model, o.ema_decay) if o.ema_decay > 0 else None
    wrapped = dist.wrap(model, device, cfg.run.sync_bn)
    if cfg.run.compile:
        wrapped = torch.compile(wrapped)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return Trainer(wrapped, optimizer, scheduler, device, dtype, o.label_smoothing, o.grad_clip, ema, scaler)


def resume_state(run: RunDir | None, resume: str | None, cfg: Config) -> tuple[Path, dict] | None:
    """The checkpoint to continue from, verified before any data is read or model built."""
    if resume is None:
        return None
    if resume != "auto":
        state = load_checkpoint(resume)
        check_resume_compatible(cfg, state)
        return Path(resume), state
    found = find_latest(run.path if run else Path(cfg.run.out))
    if found is None:
        _say(f"no checkpoint in {cfg.run.out}: starting fresh")
        return None
    check_resume_compatible(cfg, found[1])
    return found


def restore(run: RunDir | None, found: tuple[Path, dict] | None, trainer: Trainer) -> Position:
    """Load model, optimizer, schedule, EMA, RNG and data position from a checkpoint."""
    if found is None:
        return Position()
    path, state = found
    dist.unwrap(trainer.model).load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.ema is not None and state.get("ema"):
        trainer.ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng_torch"])
    random.setstate(state["rng_python"])
    if run:
        run.truncate_metrics(state["step"])
    _say(f"resumed from {path} at step {state['step']} (epoch {state['epoch'] + 1}, batch {state['batch']})")
    return Position(state["step"], state["epoch"], state["batch"], dict(state["sums"]))


def checkpoint(run: RunDir | None, cfg: Config, trainer: Trainer, pos: Position) -> None:
    if run is None:
        return
    state = {
        "model": dist.unwrap(trainer.model).state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema else None,
        "step": pos.step, "epoch": pos.epoch, "batch": pos.batch, "sums": dict(pos.sums),
        "rng_torch": torch.get_rng_state(), "rng_python": random.getstate(),
        "config": cfg.to_dict(), "world_size": dist.world_size(),
    }  # fmt: skip
    save_checkpoint(run.path, state, cfg.run.keep_checkpoints)


def train(cfg: Config, trainer: Trainer, streams: Streams, run: RunDir | None, pos: Position) -> float:
    """Epochs from `pos` until the last epoch or max_steps; returns the mean training images/s."""
    steps_per_epoch, busy, images = len(streams.train), 0.0, 0
    while pos.epoch < cfg.optim.epochs and not _done(cfg, pos):
        t_epoch, data_time = time.perf_counter(), 0.0
        bar = _progress(cfg, pos, steps_per_epoch)
        acc, stepped = Accumulator(trainer.device), 0
        t_fetch = time.perf_counter()
        for x, y in streams.train.epoch(pos.epoch, pos.batch):
            data_time += time.perf_counter() - t_fetch
            loss, correct = trainer.step(x, y, pos.step)
            pos.step, pos.batch, stepped = pos.step + 1, pos.batch + 1, stepped + 1
            acc.add(loss, correct, len(y))
            bar.update(1)
            if pos.step % cfg.run.log_every == 0 or pos.batch == steps_per_epoch:
                log_interval(
                    run, bar, trainer, pos, steps_per_epoch, loss, correct, len(y), stepped / seconds_since(t_epoch)
                )
            if _checkpoint_due(cfg, pos, steps_per_epoch):
                acc.fold_into(pos)
                checkpoint(run, cfg, trainer, pos)
            if _done(cfg, pos):
                break
            t_fetch = time.perf_counter()
        bar.close()
        acc.fold_into(pos)
        elapsed = time.perf_counter() - t_epoch
        busy, images = busy + elapsed, images + stepped * cfg.optim.batch_size
        end_epoch(cfg, trainer, streams, run, pos, steps_per_epoch, elapsed, data_time)
    return images / busy if busy else 0.0


class Accumulator:
    """Training loss and accuracy sums kept on the device: no host sync per step."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        self.loss += loss.double() * n
        self.correct += correct
        self.seen += n

    def fold_into(self, pos: Position) -> None:
        s = pos.sums
        pos.sums = {"loss": s["loss"] + float(self.loss), "correct": s["correct"] + int(self.correct),
                    "seen": s["seen"] + self.seen}  # fmt: skip
        self.loss.zero_()
        self.correct.zero_()
        self.seen = 0


def _checkpoint_due(cfg: Config, pos: Position, steps_per_epoch: int) -> bool:
    """Every checkpoint_every steps, except at an epoch's last step: end_epoch saves that one."""
    every = cfg.run.checkpoint_every
    return bool(every) and pos.step % every == 0 and pos.batch < steps_per_epoch and not _done(cfg, pos)


def _done(cfg: Config, pos: Position) -> bool:
    return bool(cfg.run.max_steps) and pos.step >= cfg.run.max_steps


def seconds_since(t0: float) -> float:
    return max(1e-9, time.perf_counter() - t0)


def log_interval(
    run, bar, trainer: Trainer, pos: Position, steps_per_epoch: int, loss, correct, n, steps_per_s
) -> None:
    """One metrics.jsonl row (rank 0) and the progress bar's numbers, from the latest batch."""
    rate = steps_per_s * n * dist.world_size()
    row = {"kind": "train", "step": pos.step, "epoch": round(pos.step / steps_per_epoch, 4), "loss": float(loss),
           "acc": int(correct) / n, "lr": trainer.optimizer.param_groups[0]["lr"], "img_per_s": rate}  # fmt: skip
    bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}", img_s=f"{rate:.0f}")
    if run:
        run.log(row)


def end_epoch(cfg, trainer: Trainer, streams: Streams, run, pos: Position, steps_per_epoch, elapsed, data_time):
    """Evaluate, log the epoch row, checkpoint; then the position moves to the next epoch."""
    complete = pos.batch >= steps_per_epoch
    test = evaluate(_eval_model(trainer), streams.test.epoch(0), trainer.device, trainer.dtype, len(streams.classes))
    seen = max(1, pos.sums["seen"])
    row = {
        "kind": "epoch", "step": pos.step, "epoch": round(pos.step / steps_per_epoch, 4),
        "train_loss": pos.sums["loss"] / seen, "train_acc": pos.sums["correct"] / seen,
        "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"],
        "lr": trainer.optimizer.param_groups[0]["lr"], "img_per_s": seen * dist.world_size() / elapsed,
        "epoch_s": elapsed, "data_fraction": data_time / elapsed,
    }  # fmt: skip
    if run:
        run.log(row)
    _say(f"epoch {row['epoch']:.2f}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
         f"test loss {row['test_loss']:.4f} top-1 {row['test_top1']:.4f} | {row['img_per_s']:.0f} img/s, "
         f"data {100 * row['data_fraction']:.1f}% of the epoch")  # fmt: skip
    if complete:
        pos.epoch, pos.batch, pos.sums = pos.epoch + 1, 0, {"loss": 0.0, "correct": 0, "seen": 0}
    checkpoint(run, cfg, trainer, pos)


def _eval_model(trainer: Trainer):
    return trainer.ema.module if trainer.ema is not None else trainer.model


def finish(cfg, trainer: Trainer, streams: Streams, run, pos: Position, wall_s: float, img_per_s: float) -> dict:
    """Final evaluation, weights, curves and summary.json."""
    model = dist.unwrap(_eval_model(trainer))
    test = evaluate(model, streams.test.epoch(0), trainer.device, trainer.dtype, len(streams.classes))
    summary = {
        "test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["loss"],
        "test_samples": test["samples"], "params": count_params(model), "epochs": pos.step / len(streams.train),
        "steps": pos.step, "wall_s": wall_s, "train_img_per_s": img_per_s, "world_size": dist.world_size(),
        "model": cfg.model.name, "share": cfg.model.share, "dataset": cfg.data.dataset,
        "weights": "ema" if trainer.ema is not None else "final",
    }  # fmt: skip
    if run:
        save(model, run.path / "model.safetensors", extra={"dataset": cfg.data.dataset, "classes": streams.classes})
        training_curves(run.read_metrics(), run.path / "curves.png", f"{cfg.model.name} share={cfg.model.share}")
        run.write_json("summary.json", summary)
        _say(f"test top-1 {summary['test_top1']:.4f}, top-5 {summary['test_top5']:.4f}; wrote {run.path}")
    return summary


def _progress(cfg: Config, pos: Position, steps_per_epoch: int):
    show = cfg.run.progress and dist.is_main() and sys.stderr.isatty()
    return tqdm(total=steps_per_epoch, initial=pos.batch, desc=f"epoch {pos.epoch + 1}/{cfg.optim.epochs}",
                disable=not show, leave=False, dynamic_ncols=True)  # fmt: skip


def _say(message: str) -> None:
    if dist.is_main():
        tqdm.write(message, file=sys.stderr)
