"""The run directory's layout, owned here: what each file is called and what "finished" means.

A run directory holds config.json (resolved config, versions, the fast path it ran with),
metrics.jsonl (a row every log interval and every epoch), the training checkpoints
ckpt-<step>.pt with their checksum records ckpt-<step>.json, and, once finished, summary.json,
model.safetensors and curves.png; a study adds train.log; while a trainer writes it, lease.json
(lease.py). The trainer (engine/), the study runner
and the report (study/) and `sharenet eval` all read and write it through `RunDir`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import torch

from .errors import SharenetError, WriteError
from .storage import atomic_write
from .version import __version__

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "summary.json"
WEIGHTS, CURVES, TRAIN_LOG = "model.safetensors", "curves.png", "train.log"


def git_revision() -> str | None:
    """The sharenet source checkout's commit, when it runs from one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def default_out(model: str, share: str) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{share}"


class RunDir:
    """The files of one run. Reading needs nothing; `create` makes the directory for writing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """The directory, made and proven writable before any work starts (only rank 0 writes)."""
        run = cls(path)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise SharenetError(f"output directory {run.path} is not writable: {e.strerror or e}") from None
        return run

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    # --- checkpoints: ckpt-<step, 8 digits>.pt, each with a ckpt-<step>.json checksum record
    def checkpoint_path(self, step: int) -> Path:
        return self.path / f"ckpt-{step:08d}.pt"

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, newest step first."""
        return sorted(self.path.glob("ckpt-*.pt"), reverse=True)

    @staticmethod
    def checkpoint_record(checkpoint: Path) -> Path:
        return Path(checkpoint).with_suffix(".json")

    # --- state
    def finished(self) -> bool:
        """A run is finished when its summary.json exists: it is written last, after the weights."""
        return (self.path / SUMMARY).exists()

    def state(self) -> str:
        """ "done", "partial" (a checkpoint to resume from) or "new"."""
        return "done" if self.finished() else "partial" if self.checkpoints() else "new"

    def has_run(self) -> bool:
        return self.state() != "new"

    # --- records
    def read_json(self, name: str) -> dict:
        return json.loads((self.path / name).read_text())

    def write_json(self, name: str, data: dict) -> Path:
        path = self.path / name
        try:
            atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))
        except OSError as e:
            raise WriteError(f"cannot write {path} ({e.strerror or e})") from None
        return path

    def write_config(self, config: dict, environment: dict) -> None:
        self.write_json(
            CONFIG,
            {
                **config,
                "sharenet_version": __version__,
                "git_revision": git_revision(),
                "torch_version": torch.__version__,
                "date": time.strftime("%Y-%m-%d", time.gmtime()),  # of this (re)start, in UTC: reports print it
                **{f"env_{k}": v for k, v in environment.items()},
            },
        )

    def log(self, row: dict) -> None:
        """Append one row; a row that does not fit (full disk) is removed again, never left half written."""
        path, data = self.path / METRICS, (json.dumps(row) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:  # unbuffered: a failure is seen here, not at close
                data = data[os.write(fd, data) :]
        except OSError as e:
            os.ftruncate(fd, size)
            raise WriteError(f"cannot append to {path} ({e.strerror or e}); the checkpoints are kept") from None
        finally:
            os.close(fd)

    def read_metrics(self) -> list[dict]:
        path = self.path / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, step: int) -> None:
        """Drop rows logged after `step`: a resumed run logs them again."""
        rows = [r for r in self.read_metrics() if r["step"] <= step]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.path / METRICS, lambda tmp: tmp.write_text(text))


def finished_runs(root: Path) -> list[RunDir]:
    """`root` itself when it is a finished run, else every finished run below it."""
    root = Path(root)
    if RunDir(root).finished():
        return [RunDir(root)]
    return [RunDir(p.parent) for p in sorted(root.rglob(SUMMARY))]
