"""What a study knows of each finished run, read from its run directory (rundir.py owns the layout)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from ..errors import SharenetError
from ..rundir import CONFIG, SUMMARY, RunDir, finished_runs


@dataclass
class RunRecord:
    path: Path
    dataset: str
    model: str
    share: str
    seed: int
    params: int
    test_top1: float
    train_error: float | None  # 1 - training accuracy of the final epoch
    epochs: float
    wall_s: float
    curve: list[tuple[float, float]]  # (epoch, test top-1) per epoch row
    loss_curve: list[tuple[float, float]]  # (epoch, training loss) per logged training row
    variant: str = ""  # what else shaped the model: a width other than the family's, the scheme's options
    budget: int | None = None  # model.params: the parameter budget the model was solved for
    machine: str = ""  # where it ran: CPU or GPU name, vector ISA, threads, and the date where recorded


def collect(paths: list[str | Path]) -> list[RunRecord]:
    """Every finished run at or below `paths`."""
    return [_record(run) for run in finished_at(paths)]


def finished_at(paths: list[str | Path]) -> list[RunDir]:
    """The finished run directories at or below `paths`; none at all is an error naming them."""
    runs = []
    for p in map(Path, paths):
        if not p.exists():
            raise SharenetError(f"{p} does not exist")
        runs += finished_runs(p)
    if not runs:
        raise SharenetError(f"no finished runs ({SUMMARY}) under {', '.join(map(str, paths))}")
    return runs


def _record(run: RunDir) -> RunRecord:
    summary, config, rows = run.read_json(SUMMARY), run.read_json(CONFIG), run.read_metrics()
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    return RunRecord(
        run.path,
        config["data"]["dataset"],
        config["model"]["name"],
        config["model"]["share"],
        config["run"]["seed"],
        summary["params"],
        summary["test_top1"],
        1 - epochs[-1]["train_acc"] if epochs else None,
        summary["epochs"],
        summary["wall_s"],
        [(r["epoch"], r["test_top1"]) for r in epochs],
        [(r["epoch"], r["loss"]) for r in rows if r.get("kind") == "train"],
        variant(config["model"]),
        config["model"].get("params"),
        machine(config),
    )


def machine(config: dict) -> str:
    """ "AMD EPYC, AVX512-BF16, 1 thread, 2026-12-05" from a config.json's environment fields."""
    if "env_device_name" not in config:
        return ""
    threads = config.get("env_threads")
    parts = [config["env_device_name"], config.get("env_isa")]
    parts.append(f"{threads} thread{'' if threads == 1 else 's'}" if threads else None)
    return ", ".join(p for p in (*parts, config.get("date")) if p)


def variant(model: dict) -> str:
    """ "width 12, templates=2": a recorded model's width (where not its family's) and scheme options."""
    from ..models.plan import OPTIONS, Sharing
    from ..models.registry import default_width

    parts = []
    if model.get("width") not in (None, default_width(model["name"])):
        parts.append(f"width {model['width']}")
    for option in OPTIONS.get(model["share"], ()):  # the options that differ from the scheme's defaults
        value = model.get(option)
        if value is not None and value != getattr(Sharing(), option):
            parts.append(f"{option}={value:,}" if isinstance(value, int) else f"{option}={value}")
    if model.get("params") is not None:
        parts.append(f"budget {model['params']:,}")
    return ", ".join(parts)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value): the report and the claims use the same."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def unresolved(diffs: list[float]) -> str:
    """ "not resolved at n = k" when paired differences' mean is no larger than their seed spread, or
    k = 1; "" when resolved. The claims and the frontier judge by this one rule."""
    mean, std = mean_std(diffs)
    return "" if len(diffs) > 1 and abs(mean) > std else f"not resolved at n = {len(diffs)}"
