"""`sharenet report RUNS...`: a Markdown + CSV table and PNG plots built from recorded run directories.

Every number comes from the runs' summary.json / metrics.jsonl (final epoch, never the best test
epoch); seeds of the same (data set, model, scheme) are aggregated as mean +- std.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from ..models import SCHEMES
from ..paper import PAPER_TOP1_ERROR
from .claims import claims_section
from .frontier import equal_budget_section, frontier_plot, frontier_section
from .plots import accuracy_vs_params, curves_per_model
from .records import RunRecord, Section, mean_std, pct, write_page


def aggregate(records: list[RunRecord]) -> list[dict]:
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.model, r.share, r.variant), []).append(r)
    rows = []
    size = {}  # a model's largest parameter count (its unshared form): models ordered by size, then scheme
    for r in records:
        size[r.model] = max(size.get(r.model, 0), r.params)
    order = {scheme: i for i, scheme in enumerate(SCHEMES)}

    def key(kv):
        (dataset, model, share, variant), _ = kv
        return dataset, size[model], model, order.get(share, len(order)), variant

    for (dataset, model, share, variant), runs in sorted(groups.items(), key=key):
        top1, top1_std = mean_std([r.test_top1 for r in runs])
        train = [r.train_error for r in runs if r.train_error is not None]
        base = groups.get((dataset, model, "none", ""))
        paper = PAPER_TOP1_ERROR.get((dataset, model, share))
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "share": share,
                "variant": variant,
                "params": runs[0].params,
                "n": len(runs),
                "test_top1": top1,
                "test_top1_std": top1_std,
                "train_error": statistics.fmean(train) if train else None,
                "vs_unshared": top1 - statistics.fmean(r.test_top1 for r in base) if base and share != "none" else None,
                "paper_top1": None if paper is None else 1 - paper / 100,
                "vs_paper": None if paper is None else top1 - (1 - paper / 100),
                "epochs": statistics.fmean(r.epochs for r in runs),
                "wall_s": sum(r.wall_s for r in runs),
                "minutes_per_run": statistics.fmean(r.wall_s for r in runs) / 60,
                "machine": "; ".join(sorted({r.machine for r in runs if r.machine})),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """The table; a column of variants (width, scheme options, budget) only where a run has one."""
    variants = any(r["variant"] for r in rows)
    head = (
        f"| data set | model | scheme |{' variant |' if variants else ''} params | test top-1 % (mean ± std) | n "
        "| final train error % | vs unshared (pts) | paper top-1 % | vs paper (pts) | minutes per run | machine |"
    )
    lines = [head, "|" + "---|" * (13 if variants else 12)]
    for r in rows:
        variant = f" {r['variant']} |" if variants else ""
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['share']} |{variant} {r['params']:,} | {pct(r['test_top1'])} ± "
            f"{pct(r['test_top1_std'])} | {r['n']} | {pct(r['train_error'])} | {pct(r['vs_unshared'], True)} "
            f"| {pct(r['paper_top1'])} | {pct(r['vs_paper'], True)} | {r['minutes_per_run']:.1f} | {r['machine']} |"
        )
    return "\n".join(lines) + "\n"


def results_section(records: list[RunRecord], rows: list[dict]) -> Section:
    """The table of every (data set, model, scheme, variant), and what its columns measure."""
    total_h = sum(r.wall_s for r in records) / 3600
    notes = (
        f"{len(records)} runs, {total_h:.2f} h of training in all. Final-epoch test accuracy (never the best "
        "epoch); 'vs unshared' is the difference of the means; minutes are each run's training wall time "
        "(runs that shared a machine's cores took longer than one alone would)."
    )
    return Section("", markdown(rows), notes)


def figures_section(pareto: str, curves: str) -> Section:
    """Links to the two figures every report has (their files' names)."""
    links = f"![accuracy against parameters]({pareto})\n\n![training loss and test accuracy per model]({curves})"
    return Section("", links, "")


def figure(out: Path, what: str) -> Path:
    """FILE-what.png beside FILE.md."""
    stem = out.with_suffix("")
    return stem.with_name(f"{stem.name}-{what}.png")


def write_files(records: list[RunRecord], rows: list[dict], out: Path) -> dict[str, Path]:
    """FILE.csv (the table's rows) and the PNGs beside FILE.md: accuracy against parameters, curves per
    model, and the frontier where a line has two budgets."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = {
        "pareto": accuracy_vs_params(rows, figure(out, "accuracy-vs-params")),
        "curves": curves_per_model(records, figure(out, "curves")),
        "csv": out.with_suffix("").with_suffix(".csv"),
    }
    fields = [k for k in rows[0] if k != "variant" or any(r["variant"] for r in rows)]
    with open(files["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    frontier = frontier_plot(records, figure(out, "frontier"))
    return files | ({"frontier": frontier} if frontier else {})


def write_report(records: list[RunRecord], out: Path, title: str | None = None, notes: str = "") -> dict[str, Path]:
    """FILE.md (table, the papers' claims answered, equal budgets, the frontier, plots, then `notes`),
    FILE.csv and the PNGs beside it."""
    out, rows = Path(out), aggregate(records)
    files = write_files(records, rows, out)
    sections = [
        results_section(records, rows),
        claims_section(records),
        equal_budget_section(records),
        frontier_section(records, figure(out, "frontier").name),
        figures_section(files["pareto"].name, files["curves"].name),
    ]
    files["markdown"] = write_page(out, title, [s for s in sections if s], notes)
    return files
