"""What a student inherits from its teacher's file: the config keys `sharenet compress` takes from
it (architecture and data set), and what a parameter budget may then choose. The CLI only parses;
distil.py reads the teacher itself through `teacher_metadata`, so the file's metadata is read once."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import WeightsError
from ..models.plan import RELAXABLE
from ..rundir import CONFIG, WEIGHTS
from ..weights.files import read_metadata
from .config import KEYS, Config, ConfigError, apply

NAMED = ("model.name", "data.dataset")  # what a teacher without sharenet metadata leaves to the user


def weight_file(path: str | Path) -> Path:
    """The weight file a teacher names: a run directory's model.safetensors, or the file itself."""
    src = Path(path)
    if src.is_dir():
        if not (src / WEIGHTS).is_file():
            raise WeightsError(f"teacher {src} holds no finished run: {WEIGHTS} is missing")
        return src / WEIGHTS
    if not src.is_file():
        raise WeightsError(f"teacher {src} does not exist")
    return src


def teacher_metadata(file: Path) -> dict | None:
    """The sharenet metadata of a teacher's weight file; None for a checkpoint without it. Read once
    per process while the file is unchanged: the config's inheritance and the fit both ask."""
    if file.suffix != ".safetensors":
        return None
    stat = file.stat()
    return _read_once(file.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_once(file: Path, mtime_ns: int, size: int) -> dict | None:
    return read_metadata(file)


def describe(path: str | Path) -> dict:
    """What a teacher's own file says about it, without building it: {"config": model config,
    "dataset": data set or None}; {} for a checkpoint without sharenet metadata."""
    file = weight_file(path)
    meta = teacher_metadata(file)
    if not meta:
        return {}
    dataset = meta.get("extra", {}).get("dataset")
    run_config = file.parent / CONFIG
    if dataset is None and Path(path).is_dir() and run_config.is_file():
        dataset = json.loads(run_config.read_text()).get("data", {}).get("dataset")
    return {"config": meta["config"], "dataset": dataset}


def inherited(teacher: str, given: set[str]) -> dict:
    """The keys a student of `teacher` takes from it, above its recipe and below the user's: the
    teacher's architecture (name, width, shortcut, dropout) and data set, distil.teacher and
    distil.fit. A teacher without sharenet metadata needs `NAMED` among the `given` keys."""
    base = {"distil.teacher": teacher, "distil.fit": True}
    about = describe(teacher)
    if not about:
        missing = [KEYS[k].flag for k in NAMED if k not in given]
        if missing:
            raise ConfigError(
                f"teacher {teacher} has no sharenet metadata: name its architecture and data with "
                + " and ".join(missing)
            )
        return base
    c = about["config"]
    base.update({"model.name": c["name"], "model.width": c.get("width"), "model.shortcut": c.get("shortcut")})
    base["model.dropout"] = c.get("dropout") or 0.0
    if about["dataset"]:
        base["data.dataset"] = about["dataset"]
    return base


def free_for_budget(cfg: Config, explicit: set[str]) -> Config:
    """A student under model.params: the budget chooses the rank of a relaxable scheme at the
    teacher's width (the dial), otherwise the width (which then cannot be fitted); a key set in a
    config file or --set (`explicit`) stays. A ring's budget is its own."""
    m = cfg.model
    if m.params is None or m.share == "ring":
        return cfg
    if m.share in RELAXABLE and "model.relax_rank" not in explicit:
        return apply(cfg, {"model.relax_rank": None})
    if "model.width" not in explicit:
        return apply(cfg, {"model.width": None})
    return cfg
