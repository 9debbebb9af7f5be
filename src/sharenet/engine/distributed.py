"""torch.distributed glue: rank discovery from torchrun's environment, DDP wrapping, reductions.

Everything here degrades to a no-op in a single process, so the engine has one code path.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import traceback

import torch
import torch.distributed as tdist
from torch import nn
from tqdm import tqdm

from ..errors import SharenetError

# What gloo's transport says when the rank at the other end of a collective has gone away.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer")


class PeerLostError(SharenetError):
    """This rank's collective failed because another rank stopped first (its error is the cause)."""

    exit_code = 1


def _in_group() -> bool:
    """This process has joined a process group (and has not left it yet)."""
    return tdist.is_available() and tdist.is_initialized()


def world_size() -> int:
    return tdist.get_world_size() if _in_group() else 1


def rank() -> int:
    return tdist.get_rank() if _in_group() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_type: str) -> torch.device | None:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs); the rank's device."""
    if not launched_by_torchrun() or _in_group():
        return None
    backend = "nccl" if device_type == "cuda" else "gloo"
    tdist.init_process_group(backend)
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def shutdown() -> None:
    if _in_group():
        tdist.destroy_process_group()


def release_failed_run(error: BaseException) -> None:
    """Free what a failed run's traceback still holds (the DDP model, its reducer) before shutdown().

    On success the model is gone before the group is destroyed. After an error the traceback's
    frames keep it alive, so the reducer would be the last holder of the gloo group and destroy it
    later, holding the GIL while it joins gloo's worker threads; a worker that is freeing a work
    item needs the GIL too, and both ranks hung for good (docs/design-notes.md: how often).
    The frames stay, for the traceback's lines; only their locals go.
    """
    if _in_group():
        traceback.clear_frames(error.__traceback__)
        gc.collect()


def explain_peer_loss(error: BaseException) -> PeerLostError | None:
    """One line instead of a surviving rank's gloo traceback, when another rank failed first.

    A rank that fails (say, rank 0 cannot write a checkpoint) leaves its peers inside their next
    collective, where gloo raises "Connection closed by peer"; their tracebacks would bury the one
    error that matters, which the failed rank printed itself.
    """
    if world_size() == 1 or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    if not any(marker in text for marker in _PEER_GONE):
        return None
    reason = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0]).split(". ")[0]  # drop gloo's source path
    return PeerLostError(
        f"rank {rank()} stopped because another rank left the run ({reason}); that rank's own error says why"
    )


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP when distributed. Shared kernels need no flag: each is one parameter whose gradient
    accumulates over its uses before DDP's hook fires once."""
    if world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(t: torch.Tensor) -> None:
    if world_size() > 1:
        tdist.all_reduce(t)


def all_reduce_max(t: torch.Tensor) -> None:
    if world_size() > 1:
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)


def gather(obj) -> list:
    """`obj` from every rank, in rank order (a one-element list in a single process)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def prefix_warnings() -> None:
    """Warnings from ranks other than 0 carry their rank, so a log of N ranks stays readable."""
    import warnings

    if world_size() == 1 or rank() == 0:
        return
    original = warnings.formatwarning
    warnings.formatwarning = lambda *a, **k: f"[rank {rank()}] " + original(*a, **k)


def say(message: str) -> None:
    """A message to the user from rank 0 alone, written above any progress bar."""
    if is_main():
        tqdm.write(message, file=sys.stderr)
