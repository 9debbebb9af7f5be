"""The training loop: epochs of steps, logging, checkpoints when due, and the epoch's row (its
measurements: evaluation.py). One `Fit` holds a running fit's state; the step itself is step.py,
the set-up fit.py."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..rundir import RunDir
from . import distributed as dist
from .checkpoint import save_checkpoint, training_state
from .config import Config
from .data_setup import Streams
from .distributed import say
from .evaluation import bad_images, eval_model, evaluate, held_out
from .step import Trainer
from .stop import StopRequest, stopped
from .tensorboard import Scalars


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
        pos.sums = {
            "loss": s["loss"] + float(self.loss),
            "correct": s["correct"] + int(self.correct),
            "seen": s["seen"] + self.seen,
        }
        self.loss.zero_()
        self.correct.zero_()
        self.seen = 0


@dataclass
class Fit:
    """A running fit: what the loop, its checkpoints and its records read and move on."""

    cfg: Config
    trainer: Trainer
    streams: Streams
    run: RunDir | None  # rank 0's run directory; None on the other ranks
    pos: Position
    stop: StopRequest
    last_saved: float = field(default_factory=time.monotonic)
    busy_s: float = 0.0  # wall time of the epochs' steps, for the mean images/s
    images: int = 0
    distilled: dict | None = None  # distillation: the teacher's record and the student's start, for summary.json
    scalars: Scalars | None = None  # run.tensorboard: the rows also as TensorBoard scalars (rank 0)

    def log(self, row: dict) -> None:
        """One metrics.jsonl row, and its scalars; rank 0 writes, the other ranks have no run directory."""
        if self.run:
            self.run.log(row)
        if self.scalars:
            self.scalars.log(row)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.streams.train)

    def done(self) -> bool:
        """max_steps reached (0: never)."""
        return bool(self.cfg.run.max_steps) and self.pos.step >= self.cfg.run.max_steps


def train(fit: Fit) -> float:
    """Epochs from `fit.pos` until the last epoch or max_steps; returns the mean training images/s."""
    while fit.pos.epoch < fit.cfg.optim.epochs and not fit.done():
        clock = run_epoch(fit)
        fit.busy_s += clock.elapsed()
        fit.images += clock.steps * fit.cfg.optim.batch_size
        end_epoch(fit, clock)
        maybe_checkpoint(fit)
    return fit.images / fit.busy_s if fit.busy_s else 0.0


def run_epoch(fit: Fit) -> Clock:
    """The steps of the current epoch from `fit.pos`, logged every log_every steps and at its end."""
    clock, acc, bar, pos = Clock(), Accumulator(fit.trainer.device), progress_bar(fit), fit.pos
    t = time.perf_counter()
    for x, y in fit.streams.train.epoch(pos.epoch, pos.batch):
        t_step = time.perf_counter()
        loss, correct = fit.trainer.step(x, y, pos.step)
        clock.tick(data_s=t_step - t, step_s=time.perf_counter() - t_step)
        pos.step, pos.batch = pos.step + 1, pos.batch + 1
        acc.add(loss, correct, len(y))
        bar.update(1)
        if pos.step % fit.cfg.run.log_every == 0 or pos.batch == fit.steps_per_epoch or fit.done():
            log_interval(fit, bar, loss, correct, len(y), clock)
        maybe_checkpoint(fit, acc)
        if fit.done():
            break
        t = time.perf_counter()
    bar.close()
    acc.fold_into(pos)
    return clock


def maybe_checkpoint(fit: Fit, acc: Accumulator | None = None) -> None:
    """The one place that decides when a checkpoint is due, and saves it (rank 0 writes).

    At an epoch's end (no `acc`): always. Within an epoch, after a step: every checkpoint_every
    steps and checkpoint_minutes after the last save, except at the epoch's last step or the run's
    (the epoch end saves those), and whenever a stop signal is pending; the run then stops.
    """
    signum = fit.stop.pending(fit.trainer.device)  # once per step and per epoch end on every rank: they agree
    if acc is not None:
        pos, r = fit.pos, fit.cfg.run
        inside = pos.batch < fit.steps_per_epoch and not fit.done()
        every = bool(r.checkpoint_every) and pos.step % r.checkpoint_every == 0
        timed = bool(r.checkpoint_minutes) and time.monotonic() - fit.last_saved >= 60 * r.checkpoint_minutes
        if not (signum or (inside and (every or timed))):
            return
        acc.fold_into(pos)
    if fit.run is not None:
        state = training_state(fit.trainer, fit.pos, fit.cfg)
        t0 = time.perf_counter()
        path = save_checkpoint(fit.run, state, fit.cfg.run.keep_checkpoints)
        fit.log(
            {
                "kind": "checkpoint",
                "step": fit.pos.step,
                "seconds": time.perf_counter() - t0,
                "bytes": path.stat().st_size,
            }
        )
    fit.last_saved = time.monotonic()
    if signum:
        where = fit.run.path if fit.run else fit.cfg.run.out
        raise stopped(signum, fit.pos.step, RunDir(where).checkpoint_path(fit.pos.step), where, fit.cfg)


def log_interval(fit: Fit, bar, loss, correct, n: int, clock: Clock) -> None:
    """One metrics.jsonl row (rank 0) and the progress bar's numbers, from the latest batch."""
    rate = clock.steps * n * dist.world_size() / clock.elapsed()
    row = {
        "kind": "train",
        "step": fit.pos.step,
        "epoch": round(fit.pos.step / fit.steps_per_epoch, 4),
        "loss": float(loss),
        "acc": int(correct) / n,
        "lr": fit.trainer.optimizer.param_groups[0]["lr"],
        "img_per_s": rate,
    }
    if fit.trainer.objective.distillation is not None:  # `loss` stays the labels' CE, comparable with any run's
        row["distil_objective"] = float(fit.trainer.trained_on)  # (1 - alpha) CE + alpha T^2 KL (+ penalty)
    bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}", img_s=f"{rate:.0f}")
    fit.log(row)


def end_epoch(fit: Fit, clock: Clock) -> None:
    """Evaluate and log the epoch row; a complete epoch moves the position to the next one."""
    trainer, streams, pos = fit.trainer, fit.streams, fit.pos
    t_eval = time.perf_counter()
    test = evaluate(eval_model(trainer), streams.test.epoch(0), trainer.device, trainer.dtype, len(streams.classes))
    val = held_out(trainer, streams)
    eval_s = time.perf_counter() - t_eval
    wall = clock.elapsed()
    seen = max(1, pos.sums["seen"])
    row = {
        "kind": "epoch",
        "step": pos.step,
        "epoch": round(pos.step / fit.steps_per_epoch, 4),
        "train_loss": pos.sums["loss"] / seen,
        "train_acc": pos.sums["correct"] / seen,
        "test_loss": test["loss"],
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        **val,
        **bad_images(streams),
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "img_per_s": clock.steps * streams.train.batch_size * dist.world_size() / max(1e-9, wall - eval_s),
        "epoch_s": wall,
        "step_s": clock.step_s,
        "data_s": clock.data_s,
        "eval_s": eval_s,
        "data_fraction": clock.data_s / wall,
        "outside_steps_fraction": 1 - clock.step_s / wall,
    }
    fit.log(row)
    val_text = f"val top-1 {val['val_top1']:.4f} | " if val else ""
    say(
        f"epoch {row['epoch']:.2f}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | {val_text}"
        f"test loss {row['test_loss']:.4f} top-1 {row['test_top1']:.4f} | {row['img_per_s']:.0f} img/s; "
        f"outside steps {100 * row['outside_steps_fraction']:.1f}%"
    )
    if pos.batch >= fit.steps_per_epoch:
        pos.epoch, pos.batch, pos.sums = pos.epoch + 1, 0, {"loss": 0.0, "correct": 0, "seen": 0}


def progress_bar(fit: Fit):
    show = fit.cfg.run.progress and dist.is_main() and sys.stderr.isatty()
    return tqdm(
        total=fit.steps_per_epoch,
        initial=fit.pos.batch,
        desc=f"epoch {fit.pos.epoch + 1}/{fit.cfg.optim.epochs}",
        disable=not show,
        leave=False,
        dynamic_ncols=True,
    )
