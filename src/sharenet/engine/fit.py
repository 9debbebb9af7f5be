"""`fit(config)`: the training entry point, a short composition of named steps."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import WriteError
from ..lease import Lease, release_all
from ..models import count_params, create_model, zero_init_residual
from ..models.budget import chosen
from ..rundir import CURVES, SUMMARY, WEIGHTS, RunDir, default_out
from ..storage import tensors_digest
from ..weights import save
from . import distributed as dist
from . import syncbn, tensorboard
from .checkpoint import find_latest, load_checkpoint, restore_training_state
from .config import Config, ConfigError
from .data_setup import Streams, make_streams
from .device import pick_device, use_deterministic
from .distil import Teaching
from .distributed import say
from .ema import WeightEMA
from .evaluation import eval_model, final_evaluation
from .fastpath import decide, prepare
from .loop import Fit, Position, train
from .objective import Objective, build_objective
from .optim import build_optimizer, build_scheduler, reapply_settings
from .plots import training_curves
from .step import Trainer
from .stop import StopRequest
from .validate import check_config, check_resume_compatible


def fit(cfg: Config, resume: str | None = None) -> dict:
    """Train `cfg`, writing the run directory; returns summary.json's content."""
    check_config(cfg)
    tensorboard.require(cfg)
    use_deterministic(cfg.run.deterministic)
    device = dist.init(pick_device(cfg.run.device).type) or pick_device(cfg.run.device)
    dist.prefix_warnings()
    try:
        return _fit(cfg, resume, device)
    except BaseException as e:
        dist.release_failed_run(e)
        lost = dist.explain_peer_loss(e)
        if lost is not None:
            raise lost from e
        raise
    finally:
        release_all()
        dist.shutdown()


def _fit(cfg: Config, resume: str | None, device: torch.device) -> dict:
    run = open_run_dir(cfg, resume)
    found = resume_state(run, resume, cfg)
    teaching = Teaching(cfg, run, resumed=found is not None)  # a teacher's checks, before any data is read
    torch.manual_seed(cfg.run.seed)
    random.seed(cfg.run.seed)
    streams = make_streams(cfg, device, dist.rank(), dist.world_size())
    model = build_model(cfg, streams, device)
    cfg = replace(cfg, model=cfg.model.resolved(model.config))  # records what a budget chose
    teaching.start_student(model, streams, device)  # distil.fit: a fresh student fitted to its teacher
    objective = build_objective(cfg, model, teaching.term())
    trainer = build_trainer(cfg, model, device, len(streams.train), objective=objective)
    pos = restore(run, found, trainer, cfg, len(streams.train))
    distilled = teaching.record(run, trainer, streams)  # {} without a teacher
    if run:
        sizes = {"world_size": dist.world_size(), "batch_per_rank": streams.train.batch_size}
        run.write_config({**cfg.to_dict(), **sizes}, trainer.fast.record())
    t0 = time.perf_counter()
    with StopRequest() as stop, tensorboard.scalars(cfg, run) as scalars:  # a signal stops after a step, checkpointed
        fit = Fit(cfg, trainer, streams, run, pos, stop, distilled=distilled, scalars=scalars)
        img_per_s = train(fit)
        return finish(fit, time.perf_counter() - t0, img_per_s)


def open_run_dir(cfg: Config, resume: str | None) -> RunDir | None:
    """Rank 0's run directory; refuses to overwrite a run unless resuming it."""
    if not dist.is_main():
        return None
    out = Path(cfg.run.out) if cfg.run.out else default_out(cfg.model.name, cfg.model.share)
    run = RunDir.create(out)
    if run.has_run() and resume is None:
        raise ConfigError(f"{out} already holds a run; pass --resume auto to continue it, or another --out")
    if resume and resume != "auto" and not cfg.run.out and Path(resume).is_dir():
        run = RunDir.create(resume)
    Lease(run.path).acquire()  # one trainer per run directory; released when the fit ends
    return run


def build_model(cfg: Config, streams: Streams, device: torch.device) -> torch.nn.Module:
    m = cfg.model
    model = create_model(m.name, num_classes=len(streams.classes), in_chans=streams.in_chans, **m.create_kwargs())
    if m.zero_init_residual:
        zero_init_residual(model)
    if m.params is not None:
        say(
            f"model.params={m.params:,}: {m.name} share={m.share}, {chosen(model.config)}, "
            f"{count_params(model):,} parameters"
        )
    return model.to(device)


def build_trainer(
    cfg: Config, model, device: torch.device, steps_per_epoch: int, objective: Objective | None = None
) -> Trainer:
    """The model on this machine's fast path (fastpath.py), with its optimizer, schedule and EMA; the
    objective (by default `build_objective`'s from labels) with any network it runs on the same path."""
    o = cfg.optim
    fast = decide(cfg.run, device, o.epochs * steps_per_epoch)
    if cfg.run.sync_bn and dist.world_size() > 1:
        syncbn.convert(model)  # before the fast path: cross-rank layers keep their own statistics
    fast = prepare(model, fast)
    optimizer = build_optimizer(model, o)
    scheduler = build_scheduler(optimizer, o, steps_per_epoch)
    ema = WeightEMA(model, o.ema_decay, o.ema_warmup) if o.ema_decay > 0 else None
    wrapped = dist.wrap(model, device)
    if fast.compile:
        wrapped = torch.compile(wrapped)
    return Trainer(
        model=wrapped,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        dtype=fast.dtype,
        objective=(objective or build_objective(cfg, model)).on_fast_path(device, fast),
        grad_clip=o.grad_clip,
        ema=ema,
        scaler=torch.amp.GradScaler("cuda") if fast.dtype == torch.float16 else None,
        fast=fast,
    )


def resume_state(run: RunDir | None, resume: str | None, cfg: Config) -> tuple[Path, dict] | None:
    """The checkpoint to continue from, verified before any data is read or model built."""
    if resume is None:
        return None
    if resume != "auto":
        found = (Path(resume), load_checkpoint(resume))
    else:
        found = find_latest(run or RunDir(cfg.run.out))
        if found is None:
            say(f"no checkpoint in {cfg.run.out}: starting fresh")
            return None
    changed = check_resume_compatible(cfg, found[1])
    if changed:
        say("resuming with changed settings: " + "; ".join(changed))
    return found


def restore(
    run: RunDir | None, found: tuple[Path, dict] | None, trainer: Trainer, cfg: Config, steps_per_epoch: int
) -> Position:
    """The position to start from: a fresh one, or the checkpoint's, with its state loaded."""
    if found is None:
        if run:
            run.truncate_metrics(0)  # a fresh start: rows of an earlier attempt with no checkpoint go
        return Position()
    path, state = found
    pos = Position(*restore_training_state(state, trainer))
    reapply_settings(trainer.optimizer, trainer.scheduler, cfg.optim, steps_per_epoch)
    if run:
        run.truncate_metrics(pos.step)
    say(f"resumed from {path} at step {pos.step} (epoch {pos.epoch + 1}, batch {pos.batch})")
    return pos


def finish(fit: Fit, wall_s: float, img_per_s: float) -> dict:
    """Final evaluation, weights, curves and summary.json."""
    cfg, trainer, streams, run, pos = fit.cfg, fit.trainer, fit.streams, fit.run, fit.pos
    model = eval_model(trainer)  # already the plain module
    summary = {
        **final_evaluation(cfg, trainer, streams),
        "params": count_params(dist.unwrap(trainer.model)),
        "epochs": pos.step / len(streams.train),
        "steps": pos.step,
        "wall_s": wall_s,
        "train_img_per_s": img_per_s,
        "world_size": dist.world_size(),
        "model": cfg.model.name,
        "share": cfg.model.share,
        "dataset": cfg.data.dataset,
        "weights": "ema" if trainer.ema is not None else "final",
        "rank_param_sha256": dist.gather(tensors_digest(dict(model.named_parameters()))),  # equal on every rank
        **(fit.distilled or {}),  # the teacher, and how the student started
    }
    if run:
        write_results(cfg, run, model, streams, summary)
        if fit.scalars:
            fit.scalars.summary(summary, pos.step)
        say(f"test top-1 {summary['test_top1']:.4f}, top-5 {summary['test_top5']:.4f}; wrote {run.path}")
    return summary


def write_results(cfg: Config, run: RunDir, model, streams: Streams, summary: dict) -> None:
    """Weights, then summary.json (the run is finished), then the curves, which may fail without loss.

    The last checkpoint holds the final state: when the weights cannot be written, resuming writes them.
    """
    extra = {"dataset": cfg.data.dataset, "classes": streams.classes, "preprocess": streams.preprocess.to_dict()}
    try:
        save(model, run / WEIGHTS, extra=extra)
    except OSError as e:
        raise WriteError(
            f"cannot write the final weights {run / WEIGHTS} ({e.strerror or e}); the trained state is in the last "
            f"checkpoint: make room, then sharenet train --resume auto --out {run.path} writes them"
        ) from None
    run.write_json(SUMMARY, summary)
    try:
        training_curves(run.read_metrics(), run / CURVES, f"{cfg.model.name} share={cfg.model.share}")
    except Exception as e:  # a plot is never worth the run: weights and summary are already written
        say(f"warning: could not write {run / CURVES} ({getattr(e, 'strerror', None) or e}); weights and summary kept")
