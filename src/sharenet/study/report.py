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
from .claims import answer_claims, claims_markdown
from .frontier import equal_budget_markdown, frontier_markdown, frontier_plot
from .plots import accuracy_vs_params, curves_per_model
from .records import RunRecord, mean_std, pct, rule


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


def write_report(records: list[RunRecord], out: Path, title: str | None = None, notes: str = "") -> dict[str, Path]:
    """FILE.md (table, the papers' claims answered, plots, then `notes`), FILE.csv and two PNGs beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = aggregate(records)
    stem = out.with_suffix("")
    files = {
        "pareto": accuracy_vs_params(rows, stem.with_name(stem.name + "-accuracy-vs-params.png")),
        "curves": curves_per_model(records, stem.with_name(stem.name + "-curves.png")),
    }
    fields = [k for k in rows[0] if k != "variant" or any(r["variant"] for r in rows)]
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    files["csv"] = stem.with_suffix(".csv")
    total_h = sum(r.wall_s for r in records) / 3600
    claims = claims_markdown(answer_claims([r for r in records if not r.variant]))  # the papers' own models
    text = [
        f"# {title}\n" if title else "",
        markdown(rows),
        f"{len(records)} runs, {total_h:.2f} h of training in all. Final-epoch test accuracy (never the best "
        "epoch); 'vs unshared' is the difference of the means; minutes are each run's training wall time "
        "(runs that shared a machine's cores took longer than one alone would).",
        "",
    ]
    if claims:
        text += [
            "## The papers' claims on these runs",
            "",
            claims,
            "Differences are paired by seed: shared minus unshared run of the same seed (claim 2: of the final "
            "training error). " + rule("zero (for claim 1: minus the paper's tolerance, the cost it calls little)"),
            "",
        ]
    budgets = equal_budget_markdown(records)
    if budgets:
        text += [
            "## Equal budgets: which network is most accurate at a given size",
            "",
            budgets,
            "A network meets a budget when it was solved for it (`model.params`: the widest that fits, or the "
            "ring of that size) or, at its family's width, is within 2 % of it. Most accurate first; 'vs plain' "
            "is paired by seed against the plain network at its family's width. " + rule(),
            "",
        ]
    frontier = frontier_markdown(records)
    if frontier:
        files["frontier"] = frontier_plot(records, stem.with_name(stem.name + "-frontier.png"))
        text += [
            "## The frontier: equal budgets where capacity binds",
            "",
            frontier,
            "Each line's runs differ only in their parameter budget (model.params): the plain network at the "
            "width that fits, or the ring of the size that meets it. Differences are paired by seed against the "
            "plain line at the same budget. " + rule() + " The list under the table answers from which budget "
            "down each shared line beats the plain one: the largest budget up to which it is better at every "
            "budget.",
            "",
            f"![test top-1 against parameters, each line with its seeds' range]({files['frontier'].name})",
            "",
        ]
    text += [
        f"![accuracy against parameters]({files['pareto'].name})",
        "",
        f"![training loss and test accuracy per model]({files['curves'].name})",
        "",
    ]
    if notes:
        text += [notes.strip(), ""]
    out.write_text("\n".join(text))
    files["markdown"] = out
    return files
