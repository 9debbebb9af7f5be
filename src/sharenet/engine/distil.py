"""Knowledge distillation, and compression of a trained network into a shared one.

Hinton, Vinyals & Dean ("Distilling the Knowledge in a Neural Network", 2015): the student
minimises (1 - alpha) CE(labels) + alpha T^2 KL(p_T || q_T), where p_T and q_T are the teacher's
and the student's softmax at temperature T; the T^2 keeps the soft term's gradients at the hard
term's scale whatever T is (the term itself: objective.py `Distillation`). The teacher is frozen:
eval mode, no gradients, on the student's fast path (device, autocast dtype, memory format, compilation).
`Teaching` is all that a fit does with a teacher; without one, it does nothing.

`sharenet compress` (distil.fit) starts the student from its teacher: each shared tensor of the
student's plan is fitted to the teacher's kernels it replaces (weights/transfer.py `fuse`). A
fused kernel shifts the statistics of every activation after it, so the BatchNorm running
statistics the teacher left are re-estimated on training batches before the first step. Each
stage of that start is measured on the test set and recorded (metrics.jsonl, summary.json).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from ..errors import WeightsError
from ..models import ResNet, count_params, create_model
from ..models.budget import count_on_meta
from ..rundir import RunDir
from ..storage import file_digest
from ..weights import calibration, load, load_weights
from ..weights.peers import detect_layout, to_sharenet
from ..weights.transfer import fuse, read_state, unshared_state_dict
from . import distributed as dist
from .checkpoint import CheckpointError
from .config import Config, ConfigError
from .device import autocast, pick_dtype
from .distributed import say
from .evaluation import test_top1
from .inherit import teacher_metadata, weight_file
from .objective import Distillation
from .step import Trainer

ARCHITECTURE = ("name", "width", "shortcut", "num_classes", "in_chans")  # what a fit needs to be equal


@dataclass
class Teacher:
    model: ResNet  # frozen, in eval mode, on the CPU until `on_fast_path`
    file: Path  # the weight file read
    sha256: str  # of that file's bytes: the run records it, a resume checks it
    dataset: str | None  # what it was trained on, where its file says
    preprocess: dict | None  # how its inputs were made, where its file says
    params: int  # counted before freezing (count_params counts trainable tensors)

    def record(self, test_top1: float) -> dict:
        """summary.json's account of the teacher."""
        return {"file": str(self.file), "sha256": self.sha256, "params": self.params, "test_top1": test_top1}


def read_teacher(path: str | Path, name: str) -> Teacher:
    """The teacher, verified and frozen. A file without sharenet metadata (a CIFAR-ResNet or
    torchvision checkpoint, ...) is read as architecture `name`, its classes and input channels
    taken from its head and stem."""
    file = weight_file(path)
    meta = teacher_metadata(file)
    if meta:
        model = load(file)  # verifies the checksum and the plan
        extra = meta.get("extra", {})
        dataset, preprocess = extra.get("dataset"), extra.get("preprocess")
    else:
        state, _ = read_state(file)
        state = to_sharenet(state, detect_layout(state))
        head, stem = state.get("head.fc.weight"), state.get("stem.conv.weight")
        if head is None or stem is None:
            raise WeightsError(f"teacher {file} has no classifier head or stem conv a ResNet of sharenet's would read")
        model = create_model(name, num_classes=head.shape[0], in_chans=stem.shape[1])
        load_weights(model, file, fuse_kernels=True)  # a shared peer expands into the plain network exactly
        dataset = preprocess = None
    params = count_params(model)
    model.eval().requires_grad_(False)
    return Teacher(model, file, file_digest(file, "sha256"), dataset, preprocess, params)


def check_student(cfg: Config, teacher: Teacher) -> None:
    """Before any data is read: with distil.fit, a student larger than its teacher is refused.

    The student is counted on the meta device with the teacher's classes and input channels,
    which the data must match anyway (`check_data`)."""
    if not cfg.distil.fit:
        return
    t = teacher.model.config
    n = count_on_meta(
        create_model,
        name=cfg.model.name,
        num_classes=t["num_classes"],
        in_chans=t["in_chans"],
        **cfg.model.create_kwargs(),
    )
    if n > teacher.params:
        raise ConfigError(
            f"the student ({cfg.model.name} share={cfg.model.share}, {n:,} parameters) would be larger than its "
            f"teacher ({teacher.params:,}): compress to a scheme or model.params that shares more"
        )


def check_data(teacher: Teacher, classes: tuple[str, ...], in_chans: int, preprocess: dict) -> None:
    """The teacher must classify the data's classes from the data's inputs, made as it was trained on."""
    t, file = teacher.model.config, teacher.file
    if t["num_classes"] != len(classes):
        raise ConfigError(f"teacher {file} has {t['num_classes']} classes, the data set {len(classes)}")
    if t["in_chans"] != in_chans:
        raise ConfigError(f"teacher {file} takes {t['in_chans']} input channels, the data set has {in_chans}")
    if teacher.preprocess is not None and not same_inputs(teacher.preprocess, preprocess):
        raise ConfigError(
            f"teacher {file} was trained on inputs made as {teacher.preprocess}, this data gives {preprocess}: "
            "use the teacher's data set"
        )


STATS_TOLERANCE = 0.01  # normalisation statistics within this: a held-out split (data.val_split) moves them ~1e-3


def same_inputs(a: dict, b: dict) -> bool:
    """Two preprocessings make the same inputs: the same channels and sizes, and normalisation
    statistics within STATS_TOLERANCE (in-memory data sets compute them on the training images,
    which a held-out split changes slightly)."""
    if any(a[k] != b[k] for k in ("channels", "size", "resize")):
        return False
    pairs = [(x, y) for k in ("mean", "std") for x, y in zip(a[k], b[k], strict=True)]
    return all(abs(x - y) <= STATS_TOLERANCE for x, y in pairs)


def fittable(student: ResNet, teacher: Teacher) -> bool:
    """The student is the teacher's architecture (under any plan): its shared tensors can be fitted."""
    return all(student.config.get(k) == teacher.model.config.get(k) for k in ARCHITECTURE)


def fit_student(student: ResNet, teacher: Teacher, covariances: dict | None = None) -> dict[str, float]:
    """Fit the student's weights to the teacher's (with `covariances`, their outputs on calibration
    inputs); each fitted conv's relative error, of its kernel or of its outputs."""
    report = fuse(student, unshared_state_dict(teacher.model), covariances)
    return {conv: e for convs in report.values() for conv, e in convs.items()}


def input_covariances(
    model: nn.Module, paths: list[str], stream, count: int, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Per conv path, the second moment of its input patches (weights/calibration.py) over the
    first `count` batches of the training `stream`, summed over the ranks: what a data-aware fit
    weighs each conv's errors by. The model runs in eval mode, as the teacher it is."""
    used = min(count, len(stream))
    if used < 1:
        raise ConfigError("a data-aware fit needs at least one calibration batch (distil.calibration_batches >= 1)")
    batches = (x.to(device) for x, _ in itertools.islice(stream.epoch(0), used))
    with autocast(device, dtype):
        return calibration.input_covariances(
            model,
            paths,
            batches,
            reduce=dist.all_reduce_sum,
            ranks=dist.world_size(),
            advice="raise distil.calibration_batches or fit weights (distil.fit_on=weights)",
        )


def reestimate_batchnorm(model: nn.Module, stream, count: int, device: torch.device, dtype: torch.dtype) -> int:
    """Replace every BatchNorm's running statistics by their average over the first `count` batches of
    the training `stream`'s first epoch (torch's update_bn: a cumulative average), averaged over the
    ranks; returns the batches used. 0 keeps the statistics as they are."""
    used = min(count, len(stream))
    if not used:
        return 0
    with autocast(device, dtype):
        update_bn((x for x, _ in itertools.islice(stream.epoch(0), used)), model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for t in (m.running_mean, m.running_var):
                dist.all_reduce_sum(t)
                t /= dist.world_size()
    return used


def start_record(run: RunDir | None, teacher: Teacher) -> dict | None:
    """How a resumed run's student started (its metrics row), after checking the teacher is the
    file the run started with; None on ranks other than 0 and for runs that logged no start."""
    rows = [r for r in run.read_metrics() if r.get("kind") == "distil"] if run else []
    if not rows:
        return None
    if rows[-1]["teacher_sha256"] != teacher.sha256:
        raise CheckpointError(
            f"teacher {teacher.file} is not the file this run started with (SHA-256 {rows[-1]['teacher_sha256'][:12]}"
            f"..., now {teacher.sha256[:12]}...): resume with the original teacher"
        )
    return rows[-1]["start"]


class Teaching:
    """What a fit does with its teacher, at the steps of `fit()` where it acts: the teacher read and
    the student checked against it (before any data is read), the student's start, the distillation
    term, and summary.json's record. Without distil.teacher (training from labels) each does nothing."""

    def __init__(self, cfg: Config, run: RunDir | None, resumed: bool):
        self.cfg, self.fresh = cfg, not resumed
        self.teacher = read_teacher(cfg.distil.teacher, cfg.model.name) if cfg.distil.teacher else None
        self.start: dict | None = None  # how the student started: fitted, or from scratch
        if self.teacher is not None:
            check_student(cfg, self.teacher)
            if resumed:
                self.start = start_record(run, self.teacher)  # the same teacher file, or an error

    def start_student(self, model: ResNet, streams, device: torch.device) -> None:
        """The data checked against the teacher; a fresh student started from it (`start_from_teacher`)."""
        if self.teacher is None:
            return
        check_data(self.teacher, streams.classes, streams.in_chans, streams.preprocess.to_dict())
        if self.fresh:
            self.start = start_from_teacher(self.cfg, model, self.teacher, streams, device)

    def term(self) -> Distillation | None:
        d = self.cfg.distil
        return None if self.teacher is None else Distillation(self.teacher.model, d.alpha, d.temperature)

    def record(self, run: RunDir | None, trainer: Trainer, streams) -> dict:
        """summary.json's teacher and the student's start. The teacher is measured at every start (on
        every rank: the evaluation is collective), as the student's steps run it; a fresh start is
        logged (a metrics row at step 0, which a resume reads back through `start_record`)."""
        if self.teacher is None:
            return {}
        teacher = self.teacher
        top1 = test_top1(trainer.objective.distillation.teacher, streams, trainer.device, trainer.dtype)
        say(f"teacher {teacher.file}: {teacher.params:,} parameters, test top-1 {top1:.4f}")
        if run and self.fresh:
            row = {"kind": "distil", "step": 0, "teacher_sha256": teacher.sha256, "teacher_test_top1": top1}
            run.log({**row, "start": self.start})
        return {"teacher": teacher.record(top1), "start": self.start}


def start_from_teacher(cfg: Config, model: ResNet, teacher: Teacher, streams, device: torch.device) -> dict:
    """A fresh start under distillation: with distil.fit, the student fitted to its teacher and its
    BatchNorm statistics re-estimated, each measured on the test set."""
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
    space, covariances = d.fit_on, None
    if space == "data":
        paths = [s.path for s in model.plan.slots if s.fitted]
        teacher.model.to(device)
        covariances = input_covariances(teacher.model, paths, streams.train, d.calibration_batches, device, dtype)
        teacher.model.cpu()
    errors = fit_student(model, teacher, covariances)
    error = sum(errors.values()) / len(errors) if errors else 0.0
    fitted = test_top1(model, streams, device, dtype)
    used = reestimate_batchnorm(model, streams.train, d.bn_batches, device, dtype)
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
