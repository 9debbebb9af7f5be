"""The run directory: config.json, metrics.jsonl, summary.json, next to weights and checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import torch

from .. import __version__
from ..errors import SharenetError
from ..weights.files import atomic_write


def git_revision() -> str | None:
    """The sharenet source checkout's commit, when it runs from one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def default_out(model: str, share: str) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{share}"


class RunDir:
    """Files of one run; only the writing rank (rank 0) creates one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise SharenetError(f"output directory {self.path} is not writable: {e.strerror or e}") from None

    def write_json(self, name: str, data: dict) -> Path:
        path = self.path / name
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))
        return path

    def write_config(self, config: dict, environment: dict) -> None:
        self.write_json("config.json", {
            **config, "sharenet_version": __version__, "git_revision": git_revision(),
            "torch_version": torch.__version__, **{f"env_{k}": v for k, v in environment.items()},
        })  # fmt: skip

    def log(self, row: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, step: int) -> None:
        """Drop rows logged after `step`: a resumed run logs them again."""
        rows = [r for r in self.read_metrics() if r["step"] <= step]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.path / "metrics.jsonl", lambda tmp: tmp.write_text(text))

    def has_run(self) -> bool:
        return any(self.path.glob("ckpt-*.pt")) or (self.path / "summary.json").exists()

    def __fspath__(self) -> str:
        return os.fspath(self.path)
