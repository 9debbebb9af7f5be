"""`run.tensorboard`: a run's records as TensorBoard scalars in RUN/tb/, so that `tensorboard --logdir
STUDY_OUT` shows a whole grid, one TensorBoard run per run directory.

metrics.jsonl stays the record; this is a view of it. Each numeric field of a metrics row becomes
the scalar "<kind>/<field>" at the row's step (train/loss, train/lr, epoch/test_top1, checkpoint/
seconds, distil/teacher_test_top1, ...), and each of summary.json's "summary/<field>" at the last
step (summary/test_top1_tta, ...), so the scalars equal the records by construction.

The view is rebuilt at every start: the event files of an earlier start are removed and the rows
metrics.jsonl holds by then (a distillation's start; on a resume, those up to its checkpoint) are
written again before training logs more. A resume that dropped the rows after its checkpoint, or
one that turns the key on, therefore shows every step once in any reader. SummaryWriter's
purge_step would not do: TensorBoard's Rust data server ignores the restart event it writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..rundir import RunDir
from .config import Config, ConfigError

TB = "tb"  # the run directory's TensorBoard folder


def require(cfg: Config) -> None:
    """Refuse run.tensorboard without the package, before any work starts (on every rank alike)."""
    if not cfg.run.tensorboard:
        return
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"run.tensorboard=true needs TensorBoard ({e}); pip install 'sharenet[tensorboard]'"
        ) from None


def numeric(record: dict) -> Iterator[tuple[str, float]]:
    """The fields a scalar can show: numbers, not flags, digests or nested records."""
    for name, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, value


class Scalars:
    """The writer of RUN/tb/, rebuilt from metrics.jsonl when it opens."""

    def __init__(self, run: RunDir):
        from torch.utils.tensorboard import SummaryWriter

        folder = run / TB
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        self.writer = SummaryWriter(folder, flush_secs=30)
        for row in run.read_metrics():
            self.log(row)

    def log(self, row: dict) -> None:
        """A metrics.jsonl row: each numeric field at the row's step."""
        kind, step = row.get("kind", "metrics"), row["step"]
        for name, value in numeric(row):
            if name != "step":
                self.writer.add_scalar(f"{kind}/{name}", value, step)

    def summary(self, summary: dict, step: int) -> None:
        self.log({**summary, "kind": "summary", "step": step})

    def close(self) -> None:
        self.writer.close()


@contextmanager
def scalars(cfg: Config, run: RunDir | None) -> Iterator[Scalars | None]:
    """Rank 0's writer while a fit runs (None when the key is off, and on other ranks); closed, with
    what it holds flushed, however the fit ends: finished, stopped by a signal or failed."""
    if not (cfg.run.tensorboard and run):
        yield None
        return
    writer = Scalars(run)
    try:
        yield writer
    finally:
        writer.close()
