"""The epoch loop: steps, logging, periodic checkpoints, and the evaluation that closes an epoch."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..rundir import RunDir
from . import distributed as dist
from .config import Config
from .data_setup import Streams
from .loop import Trainer, evaluate
from .stop import StopRequest, stopped


@dataclass
class Position:
    """Where training stands: the next optimizer step, and the epoch and batch it belongs to."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    sums: dict = field(default_factory=lambda: {"loss": 0.0, "correct": 0, "seen": 0})  # this epoch so far


@dataclass
class Clock:
    """Where an epoch's wall time went: fetching batches, optimizer steps, the rest (eval, logging)."""

    start: float = field(default_factory=time.perf_counter)
    data_s: float = 0.0
    step_s: float = 0.0
    steps: int = 0

    def tick(self, data_s: float, step_s: float) -> None:
        self.data_s, self.step_s, self.steps = self.data_s + data_s, self.step_s + step_s, self.steps + 1

    def elapsed(self) -> float:
        return max(1e-9, time.perf_counter() - self.start)


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


def train(cfg: Config, trainer: Trainer, streams: Streams, run, pos: Position, checkpoint, stop: StopRequest) -> float:
    """Epochs from `pos` until the last epoch or max_steps; returns the mean training images/s.

    `checkpoint(pos)` saves the training state (rank 0 writes; a no-op elsewhere): at epoch ends,
    every checkpoint_every steps, checkpoint_minutes after the last one, and when `stop` is pending.
    """
    steps_per_epoch, busy, images = len(streams.train), 0.0, 0
    last_saved = time.monotonic()

    def save(pos: Position, signum: int) -> None:
        nonlocal last_saved
        checkpoint(pos)
        last_saved = time.monotonic()
        if signum:
            where = run.path if run else cfg.run.out
            raise stopped(signum, pos.step, RunDir(where).checkpoint_path(pos.step), where)

    while pos.epoch < cfg.optim.epochs and not done(cfg, pos):
        clock, acc, bar = Clock(), Accumulator(trainer.device), progress_bar(cfg, pos, steps_per_epoch)
        t = time.perf_counter()
        for x, y in streams.train.epoch(pos.epoch, pos.batch):
            t_step = time.perf_counter()
            loss, correct = trainer.step(x, y, pos.step)
            clock.tick(data_s=t_step - t, step_s=time.perf_counter() - t_step)
            pos.step, pos.batch = pos.step + 1, pos.batch + 1
            acc.add(loss, correct, len(y))
            bar.update(1)
            if pos.step % cfg.run.log_every == 0 or pos.batch == steps_per_epoch or done(cfg, pos):
                log_interval(run, bar, trainer, pos, steps_per_epoch, loss, correct, len(y), clock)
            minutes = cfg.run.checkpoint_minutes
            timed = (
                bool(minutes)
                and time.monotonic() - last_saved >= 60 * minutes
                and pos.batch < steps_per_epoch
                and not done(cfg, pos)
            )  # else the epoch end saves it
            signum = stop.pending(trainer.device)  # once per step on every rank: they agree
            if checkpoint_due(cfg, pos, steps_per_epoch) or timed or signum:
                acc.fold_into(pos)
                save(pos, signum)
            if done(cfg, pos):
                break
            t = time.perf_counter()
        bar.close()
        acc.fold_into(pos)
        busy, images = busy + clock.elapsed(), images + clock.steps * cfg.optim.batch_size
        end_epoch(trainer, streams, run, pos, steps_per_epoch, clock)
        save(pos, stop.pending(trainer.device))
    return images / busy if busy else 0.0


def checkpoint_due(cfg: Config, pos: Position, steps_per_epoch: int) -> bool:
    """Every checkpoint_every steps, except at an epoch's last step: the epoch end saves that one."""
    every = cfg.run.checkpoint_every
    return bool(every) and pos.step % every == 0 and pos.batch < steps_per_epoch and not done(cfg, pos)


def done(cfg: Config, pos: Position) -> bool:
    return bool(cfg.run.max_steps) and pos.step >= cfg.run.max_steps


def log_interval(run, bar, trainer: Trainer, pos: Position, steps_per_epoch: int, loss, correct, n, clock) -> None:
    """One metrics.jsonl row (rank 0) and the progress bar's numbers, from the latest batch."""
    rate = clock.steps * n * dist.world_size() / clock.elapsed()
    row = {"kind": "train", "step": pos.step, "epoch": round(pos.step / steps_per_epoch, 4), "loss": float(loss),
           "acc": int(correct) / n, "lr": trainer.optimizer.param_groups[0]["lr"], "img_per_s": rate}  # fmt: skip
    bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}", img_s=f"{rate:.0f}")
    if run:
        run.log(row)


def end_epoch(trainer: Trainer, streams: Streams, run, pos: Position, steps_per_epoch: int, clock: Clock) -> None:
    """Evaluate and log the epoch row; a complete epoch moves the position to the next one."""
    t_eval = time.perf_counter()
    test = evaluate(eval_model(trainer), streams.test.epoch(0), trainer.device, trainer.dtype, len(streams.classes))
    val = validate(trainer, streams)
    eval_s = time.perf_counter() - t_eval
    wall = clock.elapsed()
    seen = max(1, pos.sums["seen"])
    row = {
        "kind": "epoch", "step": pos.step, "epoch": round(pos.step / steps_per_epoch, 4),
        "train_loss": pos.sums["loss"] / seen, "train_acc": pos.sums["correct"] / seen,
        "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"], **val, **bad_images(streams),
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "img_per_s": clock.steps * streams.train.batch_size * dist.world_size() / max(1e-9, wall - eval_s),
        "epoch_s": wall, "step_s": clock.step_s, "data_s": clock.data_s, "eval_s": eval_s,
        "data_fraction": clock.data_s / wall, "outside_steps_fraction": 1 - clock.step_s / wall,
    }  # fmt: skip
    if run:
        run.log(row)
    held_out = f"val top-1 {val['val_top1']:.4f} | " if val else ""
    say(f"epoch {row['epoch']:.2f}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | {held_out}"
        f"test loss {row['test_loss']:.4f} top-1 {row['test_top1']:.4f} | {row['img_per_s']:.0f} img/s; "
        f"outside steps {100 * row['outside_steps_fraction']:.1f}%")  # fmt: skip
    if pos.batch >= steps_per_epoch:
        pos.epoch, pos.batch, pos.sums = pos.epoch + 1, 0, {"loss": 0.0, "correct": 0, "seen": 0}


def bad_images(streams: Streams) -> dict:
    """Training images skipped so far as undecodable (data.bad_images=skip; image folders only)."""
    count = getattr(streams.train, "bad_images", None)
    return {} if count is None else {"bad_images": count}


def validate(trainer: Trainer, streams: Streams, tta: bool = False) -> dict:
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
    out = {"test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["loss"],
           "test_samples": test["samples"], **validate(trainer, streams), **bad_images(streams)}  # fmt: skip
    if cfg.run.tta:
        tta = evaluate(model, streams.test.epoch(0), trainer.device, trainer.dtype, n, tta=True)
        out.update({"test_top1_tta": tta["top1"], "test_top5_tta": tta["top5"], "test_loss_tta": tta["loss"],
                    "tta_forward_passes": 2, **validate(trainer, streams, tta=True)})  # fmt: skip
    if trainer.ema is not None:
        live = evaluate(dist.unwrap(trainer.model), streams.test.epoch(0), trainer.device, trainer.dtype, n)
        out.update({"ema_test_top1": test["top1"], "live_test_top1": live["top1"],
                    "ema_below_live": test["top1"] < live["top1"]})  # fmt: skip
        if streams.val is not None:
            live_val = evaluate(dist.unwrap(trainer.model), streams.val.epoch(0), trainer.device, trainer.dtype, n)
            out["live_val_top1"] = live_val["top1"]
        if out["ema_below_live"]:
            say(f"note: the EMA weights (saved, evaluated) score test top-1 {test['top1']:.4f}, below the live "
                f"weights' {live['top1']:.4f}; lower optim.ema_decay for a run this short")  # fmt: skip
    return out


def eval_model(trainer: Trainer):
    """EMA weights when kept; otherwise the plain module (no DDP, no compiled graph to re-trace)."""
    return trainer.ema.module if trainer.ema is not None else dist.unwrap(trainer.model)


def progress_bar(cfg: Config, pos: Position, steps_per_epoch: int):
    show = cfg.run.progress and dist.is_main() and sys.stderr.isatty()
    return tqdm(total=steps_per_epoch, initial=pos.batch, desc=f"epoch {pos.epoch + 1}/{cfg.optim.epochs}",
                disable=not show, leave=False, dynamic_ncols=True)  # fmt: skip


def say(message: str) -> None:
    if dist.is_main():
        tqdm.write(message, file=sys.stderr)
