"""`fit(config)`: the training entry point, a short composition of named steps."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ..errors import WriteError
from ..models import basis_penalty, count_params, create_model, zero_init_residual
from ..models.budget import chosen
from ..models.plan import RELAXABLE
from ..rundir import CURVES, SUMMARY, WEIGHTS, RunDir, default_out
from ..storage import tensors_digest
from ..weights import save
from . import distributed as dist
from . import syncbn
from .checkpoint import find_latest, load_checkpoint, restore_training_state
from .config import Config, ConfigError
from .data_setup import Streams, make_streams
from .device import pick_device, pick_dtype, use_deterministic
from .distil import (
    Teacher,
    check_data,
    check_student,
    fit_student,
    fittable,
    input_covariances,
    on_fast_path,
    read_teacher,
    reestimate_batchnorm,
    start_record,
    test_top1,
)
from .ema import WeightEMA
from .fastpath import decide, prepare
from .loop import Fit, Position, eval_model, final_evaluation, say, train
from .optim import build_optimizer, build_scheduler, reapply_settings
from .plots import training_curves
from .step import Distillation, Trainer
from .stop import StopRequest
from .validate import check_config, check_resume_compatible


def fit(cfg: Config, resume: str | None = None) -> dict:
    """Train `cfg`, writing the run directory; returns summary.json's content."""
    check_config(cfg)
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
        dist.shutdown()


def _fit(cfg: Config, resume: str | None, device: torch.device) -> dict:
    teacher = read_teacher(cfg.distil.teacher, cfg.model.name) if cfg.distil.teacher else None
    if teacher is not None:
        check_student(cfg, teacher)  # before anything is written
    run = open_run_dir(cfg, resume)
    found = resume_state(run, resume, cfg)
    resumed = start_record(run, teacher) if teacher and found else None  # the same teacher file, or an error
    torch.manual_seed(cfg.run.seed)
    random.seed(cfg.run.seed)
    streams = make_streams(cfg, device, dist.rank(), dist.world_size())
    if teacher is not None:
        check_data(teacher, streams.classes, streams.in_chans, streams.preprocess.to_dict())
    model = build_model(cfg, streams, device)
    cfg = replace(cfg, model=cfg.model.resolved(model.config))  # records what a budget chose
    start = start_from_teacher(cfg, model, teacher, streams, device) if teacher and found is None else resumed
    trainer = build_trainer(cfg, model, device, len(streams.train), teacher)
    pos = restore(run, found, trainer, cfg, len(streams.train))
    distilled = teacher_record(run, teacher, trainer, streams, start, found is None) if teacher else None
    if run:
        sizes = {"world_size": dist.world_size(), "batch_per_rank": streams.train.batch_size}
        run.write_config({**cfg.to_dict(), **sizes}, trainer.fast.record())
    t0 = time.perf_counter()
    with StopRequest() as stop:  # a signal from here on stops after a step, with a checkpoint
        fit = Fit(cfg, trainer, streams, run, pos, stop, distilled=distilled)
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


def start_from_teacher(cfg: Config, model, teacher: Teacher, streams: Streams, device: torch.device) -> dict:
    """A fresh start under distillation: with distil.fit, the student fitted to its teacher and its
    BatchNorm statistics re-estimated, each measured on the test set (distil.py)."""
    if not cfg.distil.fit:
        return {"from": "scratch"}
    if not fittable(model, teacher):
        arch = [f"{c['name']} width {c['width']}" for c in (model.config, teacher.model.config)]
        say(
            f"the student ({arch[0]}) is not the teacher's architecture ({arch[1]}): a width or depth change "
            "cannot be fitted, so it starts from scratch, with distillation"
        )
        return {"from": "scratch", "fittable": False}
    t0, dtype = time.perf_counter(), pick_dtype(cfg.run.precision, device)
    d = cfg.distil
    space = d.fit_on if model.plan.scheme in RELAXABLE else "weights"  # the learned schemes fit weights
    covariances = None
    if space == "data":
        paths = [s.path for s in model.plan.slots if s.reads_shared]
        teacher.model.to(device)
        covariances = input_covariances(teacher.model, paths, streams.train, d.calibration_batches, device, dtype)
        teacher.model.cpu()
    errors = fit_student(model, teacher, covariances)
    error = sum(errors.values()) / len(errors) if errors else 0.0
    fitted = test_top1(model, streams, device, dtype)
    used = reestimate_batchnorm(model, streams.train, cfg.distil.bn_batches, device, dtype)
    after = test_top1(model, streams, device, dtype) if used else fitted
    what = "outputs on calibration images" if space == "data" else "kernels"
    say(
        f"fitted to the teacher (mean relative error of the convs' {what} {error:.3f}): test top-1 {fitted:.4f}; "
        f"after re-estimating BatchNorm on {used} training batches {after:.4f}"
    )
    return {
        "from": "fit",
        "fit_on": space,
        "fit_error": error,
        "fit_errors": errors,  # per conv: relative error of its outputs (fit_on data) or of its kernel
        "fitted_test_top1": fitted,
        "bn_batches": used,
        "bn_test_top1": after,
        "seconds": time.perf_counter() - t0,  # the fit, the re-estimation and their two evaluations
    }


def teacher_record(
    run: RunDir | None, teacher: Teacher, trainer: Trainer, streams: Streams, start: dict | None, fresh: bool
) -> dict:
    """summary.json's teacher and the student's start. The teacher is measured at every start (on
    every rank: the evaluation is collective); a fresh start is logged (a metrics row at step 0,
    which a resume reads back through `start_record`)."""
    top1 = test_top1(trainer.distil.teacher, streams, trainer.device, trainer.dtype)
    say(f"teacher {teacher.file}: {teacher.params:,} parameters, test top-1 {top1:.4f}")
    if run and fresh:
        row = {"kind": "distil", "step": 0, "teacher_sha256": teacher.sha256, "teacher_test_top1": top1}
        run.log({**row, "start": start})
    return {"teacher": teacher.record(top1), "start": start}


def build_trainer(
    cfg: Config, model, device: torch.device, steps_per_epoch: int, teacher: Teacher | None = None
) -> Trainer:
    """The model on this machine's fast path (fastpath.py), with its optimizer, schedule and EMA,
    and the frozen teacher on the same path when distilling."""
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
    scaler = torch.amp.GradScaler("cuda") if fast.dtype == torch.float16 else None
    penalty = (
        partial(basis_penalty, model, o.ortho_own, o.ortho_penalty)
        if o.ortho_penalty and model.share == "basis"
        else None
    )
    distil = None
    if teacher is not None:
        frozen = on_fast_path(teacher, device, fast.channels_last, fast.compile)
        distil = Distillation(frozen, cfg.distil.alpha, cfg.distil.temperature)
    return Trainer(
        wrapped,
        optimizer,
        scheduler,
        device,
        fast.dtype,
        o.label_smoothing,
        o.grad_clip,
        ema,
        scaler,
        fast,
        penalty,
        distil,
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
