"""Writing files that a crash cannot half-write, and the checksums that prove a file whole.

Shared by the checkpoints and run records (engine/), the weight files (weights/) and the data
downloads (data/): one implementation of each, so that all of them fail and verify alike.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: a crash never leaves half a file.

    The temporary file keeps `path`'s suffix, for writers that check it (torch.export.save).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        raise
    except Exception as e:  # torch.save and safetensors report a full disk as their own errors
        if disk_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def disk_full(directory: Path, margin: int = 1 << 20) -> bool:
    """Less than `margin` bytes free where `directory` lives (what a failed write most likely met)."""
    try:
        return shutil.disk_usage(directory).free < margin
    except OSError:
        return False


def file_digest(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every tensor, in key order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
