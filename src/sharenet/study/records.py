"""What a study knows of each finished run, read from its run directory (rundir.py owns the layout),
the one rule by which every report judges runs paired by seed (`judge`), and the page every report
writes: sections of (title, table, notes), each built beside the code that computes its table, so
that the notes saying how to read a table cannot drift from it (`Section`, `write_page`)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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


def pct(value: float | None, signed: bool = False) -> str:
    """A fraction as every table writes it: percent (points where `signed`) to two decimals; "" for none."""
    return "" if value is None else f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def paired(runs: list[RunRecord], base: list[RunRecord], field: str = "test_top1") -> list[float]:
    """`field` of each run minus that of the `base` run of the same seed (same data order, same initial
    draw of what is not shared), in seed order; seeds without a partner, or without the value, are left out."""
    by_seed = {r.seed: getattr(r, field) for r in base}
    return [
        getattr(r, field) - by_seed[r.seed]
        for r in sorted(runs, key=lambda r: r.seed)
        if by_seed.get(r.seed) is not None and getattr(r, field) is not None
    ]


T975 = (  # Student's t, 0.975 quantiles for 1..60 degrees of freedom (see t975)
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
    2.0395, 2.0369, 2.0345, 2.0322, 2.0301, 2.0281, 2.0262, 2.0244, 2.0227, 2.0211,
    2.0195, 2.0181, 2.0167, 2.0154, 2.0141, 2.0129, 2.0117, 2.0106, 2.0096, 2.0086,
    2.0076, 2.0066, 2.0057, 2.0049, 2.0040, 2.0032, 2.0025, 2.0017, 2.0010, 2.0003,
)  # fmt: skip
MOST_SEEDS = 50  # a verdict names the seeds that would settle it up to this many, "more than" beyond


def t975(df: int) -> float:
    """Student's t 0.975 quantile; beyond 60 degrees of freedom the normal's 1.96 (no study here comes
    near). A table rather than scipy: the rule needs these sixty numbers and nothing else of it, so the
    package gains no compiled dependency and the published pages depend on no library's numerics
    (tests/test_study.py checks every entry against the t distribution's density)."""
    return T975[df - 1] if df <= len(T975) else 1.96


def interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95 % Student-t interval (n - 1 degrees of freedom); unbounded
    for one difference, which has no spread."""
    mean, std = mean_std(diffs)
    half = t975(len(diffs) - 1) * std / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf
    return mean, mean - half, mean + half


def judge(diffs: list[float], above: str = "better", below: str = "worse", against: float = 0.0) -> str:
    """The one verdict rule of every report: paired differences (one per seed) are `above` where their
    95 % interval lies above `against` (zero, or a claim's tolerance), `below` where it lies below, and
    otherwise not resolved. The interval narrows as t(n-1) * std / sqrt(n), so more seeds can settle
    what a mean inside its own std never could: an unresolved verdict says about how many would, the
    smallest m with t(m-1) * std / sqrt(m) < |mean - against|, if the seeds' spread holds."""
    mean, low, high = interval(diffs)
    if low > against:
        return above
    if high < against:
        return below
    n, std = len(diffs), mean_std(diffs)[1]
    if n < 2:
        return f"not resolved at n = {n}"  # one pair: no spread to judge by
    gap = abs(mean - against)
    m = next((k for k in range(n + 1, MOST_SEEDS + 1) if t975(k - 1) * std / math.sqrt(k) < gap), None)
    settle = f"about {m} seeds would settle it" if m else f"more than {MOST_SEEDS} seeds would be needed"
    return f"not resolved at n = {n}: {settle} if the spread holds"


def rule(against: str = "zero") -> str:
    """The rule `judge` applies, in the words a report prints beside its verdicts."""
    return (
        f"A verdict is given only where the 95 % Student-t interval of the mean paired difference (n - 1 "
        f"degrees of freedom) excludes {against}; otherwise 'not resolved at n = k' says about how many seeds "
        "would settle it if their spread holds (at n = 1 there is no spread to judge by)."
    )


def pts_interval(diffs: list[float]) -> str:
    """ "+0.28 [-1.34, +1.90]": the mean difference in points and its 95 % interval (none at n = 1)."""
    mean, low, high = interval(diffs)
    return pct(mean, True) + (f" [{pct(low, True)}, {pct(high, True)}]" if len(diffs) > 1 else "")


class Section(NamedTuple):
    """One part of a report page: the table a study module computes and the notes that say how to read it."""

    title: str  # its "## " heading; "" for a section under the page's own heading
    table: str  # Markdown, ending in a newline; or figure links
    notes: str  # how to read the table; "" for none

    def lines(self) -> list[str]:
        """The section as lines of the page: heading and blank line, table, notes, then a blank line."""
        head = [f"## {self.title}", ""] if self.title else []
        return [*head, *(part for part in (self.table, self.notes) if part), ""]


def write_page(out: Path, title: str | None, sections: list[Section], notes: str = "") -> Path:
    """FILE.md: `# title`, each section, then `notes` (commands, hardware, discussion) as given."""
    text = [f"# {title}\n" if title else ""]
    for section in sections:
        text += section.lines()
    if notes:
        text += [notes.strip(), ""]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text))
    return out
