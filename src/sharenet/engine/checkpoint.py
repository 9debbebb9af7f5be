"""Training-state checkpoints that cannot betray you.

Each checkpoint is written atomically (temp file in the same directory, fsync, rename), then a
small JSON record with its SHA-256 is written the same way: a checkpoint without a matching
record is incomplete or corrupt and is never used. Older ones are pruned only after the new one
is complete. Loading uses torch.load(weights_only=True) only. What a checkpoint holds is declared here
(`training_state`, `restore_training_state`): the loop saves and the set-up restores through them.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import SharenetError, WriteError
from ..rundir import RunDir
from ..storage import atomic_write, file_digest
from . import distributed as dist

if TYPE_CHECKING:
    from .config import Config
    from .step import Trainer


class CheckpointError(SharenetError):
    """A checkpoint that is missing, corrupt, foreign, or cannot be written."""


class CheckpointWriteError(CheckpointError, WriteError):
    """A checkpoint that could not be written (exit 1): the earlier ones are intact."""


_record = RunDir.checkpoint_record


def training_state(trainer: Trainer, pos, cfg: Config) -> dict:
    """Everything a bit-exact resume needs: weights, optimizer, schedule, EMA, loss scale, the
    random generators, and where in which epoch training stands (the loop's `Position`: step,
    epoch, batch, and that epoch's sums so far)."""
    return {
        "model": dist.unwrap(trainer.model).state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema else None,
        "scaler": trainer.scaler.state_dict() if trainer.scaler else None,  # fp16: the loss scale reached
        "rng_cuda": torch.cuda.get_rng_state(trainer.device) if trainer.device.type == "cuda" else None,
        "step": pos.step,
        "epoch": pos.epoch,
        "batch": pos.batch,
        "sums": dict(pos.sums),
        "rng_torch": torch.get_rng_state(),
        "rng_python": random.getstate(),
        "config": cfg.to_dict(),
        "world_size": dist.world_size(),
    }


def restore_training_state(state: dict, trainer: Trainer) -> tuple[int, int, int, dict]:
    """Load `training_state`'s content into `trainer` and the generators; (step, epoch, batch, sums)."""
    dist.unwrap(trainer.model).load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.ema is not None and state.get("ema"):
        trainer.ema.load_state_dict(state["ema"])
    if trainer.scaler is not None and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    if trainer.device.type == "cuda" and state.get("rng_cuda") is not None:  # dropout draws on the GPU
        torch.cuda.set_rng_state(state["rng_cuda"], trainer.device)
    torch.set_rng_state(state["rng_torch"])
    random.setstate(state["rng_python"])
    return state["step"], state["epoch"], state["batch"], dict(state["sums"])


def save_checkpoint(run_dir: Path | RunDir, state: dict, keep: int = 2) -> Path:
    path = RunDir(run_dir).checkpoint_path(state["step"])
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        record = {
            "file": path.name,
            "sha256": file_digest(path, "sha256"),
            "step": state["step"],
            "epoch": state["epoch"],
            "time": time.time(),
        }
        atomic_write(_record(path), lambda tmp: tmp.write_text(json.dumps(record)))
    except OSError as e:
        path.unlink(missing_ok=True)
        target = f": {e.filename2}" if e.filename2 else ""  # a rename's target: the file or its record
        raise CheckpointWriteError(
            f"cannot write checkpoint {path} ({e.strerror or e}{target}); earlier checkpoints are kept"
        ) from None
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
        _record(old).unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path | RunDir) -> list[Path]:
    """Checkpoint files in `run_dir`, newest step first."""
    return RunDir(run_dir).checkpoints()


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        found = find_latest(path)
        if found is None:
            raise CheckpointError(f"no complete checkpoint in {path}")
        return found[1]
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        record = json.loads(_record(path).read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"checkpoint {path} is incomplete: its record {_record(path).name} is missing") from None
    if file_digest(path, "sha256") != record.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: checksum mismatch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle: torch raises several types
        raise CheckpointError(f"checkpoint {path} is corrupt: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a sharenet training state")
    return state


def find_latest(run_dir: Path | RunDir) -> tuple[Path, dict] | None:
    """The newest checkpoint that verifies; bad newer ones are skipped with a warning."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"{e}; trying an older one", stacklevel=2)
    return None
