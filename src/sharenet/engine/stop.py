"""Stopping on a signal without losing a step: SIGTERM, SIGINT and SIGUSR1 finish the current step,
write a checkpoint and exit with the shell's code for the signal (143, 130, 138).

Schedulers stop jobs with SIGTERM (SLURM may send SIGUSR1 first; torchrun forwards SIGTERM to
every rank); a terminal sends SIGINT. The handler only records the request; the epoch loop asks
`pending()` after each step, and under torchrun the ranks agree on it (a max over ranks) so that
all stop after the same step. A second signal while stopping aborts at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import torch

from ..errors import SharenetError
from . import distributed as dist
from .config import Config

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Stopped(SharenetError):
    """Training stopped by a signal after writing a checkpoint; the CLI exits with 128 + the signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum


class SignalScope:
    """A `with` block in which SIGNALS call `on_signal` (installed from the main thread only, where
    Python runs signal handlers); the previous handlers come back on exit. What a trainer, the
    local study pool and the cluster driver each do with a stop signal is their `on_signal`."""

    def __enter__(self):
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self.on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def on_signal(self, signum: int, frame) -> None:
        raise NotImplementedError


class StopRequest(SignalScope):
    """Records the first stop signal (a second one aborts at once)."""

    def __init__(self):
        self.signum = 0

    def on_signal(self, signum: int, frame) -> None:
        if self.signum:  # the second signal: abort now, as the default action would
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        if dist.is_main():
            print(
                f"sharenet: {signal.Signals(signum).name} received: stopping after this step (send it again to abort)",
                file=sys.stderr,
                flush=True,
            )

    def pending(self, device: torch.device) -> int:
        """The signal to stop for (0: none), the same on every rank."""
        if dist.world_size() == 1:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64, device=device)
        dist.all_reduce_max(flag)
        return int(flag)


def stopped(signum: int, step: int, checkpoint, out, cfg: Config | None = None) -> Stopped:
    """The stop, its message naming the checkpoint and the command that continues the run."""
    name = signal.Signals(signum).name
    command = continue_command(cfg)
    return Stopped(
        signum,
        f"stopped by {name} at step {step}; checkpoint {checkpoint}; continue with {command} --resume auto --out {out}",
    )


def continue_command(cfg: Config | None) -> str:
    """The command that made a run, as far as its resume needs: a compressed run continues with its
    `sharenet compress TEACHER ...`, any other with `sharenet train`."""
    return f"sharenet compress {cfg.distil.teacher} ..." if cfg is not None and cfg.distil.fit else "sharenet train"
