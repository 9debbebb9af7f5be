"""The frontier where capacity binds: test top-1 against parameters, one line per kind of network
whose runs differ only in their parameter budget (`model.params`).

A line is (data set, model, scheme, scheme options): the plain network at the width a budget
allows, sharing at the same depth, depth bought with shared parameters. Each is compared with the
plain line at the same budget, paired by seed, and judged by the reports' one rule (`records.judge`:
a verdict only where the 95 % interval excludes zero). Unbudgeted plain networks within the
budgets' range stand as single points.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .records import RunRecord, Section, judge, mean_std, paired, pts_interval, rule

Line = tuple[str, str, str, str]  # data set, model, scheme, scheme options


def _options(r: RunRecord) -> str:
    """The variant without what the budget chose (width, ring size) and without the budget itself."""
    parts = [p for p in r.variant.split(", ") if p and not p.startswith(("width ", "budget ", "ring_size="))]
    return ", ".join(parts)


def budget_lines(records: list[RunRecord]) -> dict[Line, dict[int, list[RunRecord]]]:
    """Lines of at least two budgets: line -> budget -> its runs."""
    lines: dict[Line, dict[int, list[RunRecord]]] = {}
    for r in records:
        if r.budget is not None:
            key = (r.dataset, r.model, r.share, _options(r))
            lines.setdefault(key, {}).setdefault(r.budget, []).append(r)
    return {k: dict(sorted(v.items())) for k, v in lines.items() if len(v) > 1}


def name(line: Line) -> str:
    _, model, share, options = line
    return f"{model} {share}" + (f" ({options})" if options else "")


def _difference(diffs: list[float]) -> str:
    """Paired differences as both tables write them: "+1.09 [+0.20, +1.98] (better)", or "" without pairs."""
    return f"{pts_interval(diffs)} ({judge(diffs)})" if diffs else ""


def frontier_markdown(records: list[RunRecord]) -> str:
    """Per budget: each line's params and test top-1, and each shared line minus the plain one; then,
    per shared line, up to which budget it is better than the plain one."""
    lines = budget_lines(records)
    if not lines:
        return ""
    budgets = sorted({b for runs in lines.values() for b in runs})
    head = "| budget | " + " | ".join(f"{name(k)}: params, test top-1 % (n)" for k in lines)
    plain = {k[0]: k for k in lines if k[2] == "none"}  # per data set, the plain line
    shared = [k for k in lines if k[2] != "none" and k[0] in plain]
    head += "".join(f" | {name(k)} - {name(plain[k[0]])}, pts [95 % interval] (verdict)" for k in shared) + " |"
    out = [head, "|" + "---|" * (1 + len(lines) + len(shared))]
    diffs = {(k, b): paired(lines[k].get(b, []), lines[plain[k[0]]].get(b, [])) for k in shared for b in budgets}
    for budget in budgets:
        cells = []
        for runs in lines.values():
            if budget not in runs:
                cells.append("")
                continue
            top1, std = mean_std([r.test_top1 for r in runs[budget]])
            params = runs[budget][0].params
            cells.append(f"{params:,}: {100 * top1:.2f} ± {100 * std:.2f} ({len(runs[budget])})")
        for k in shared:
            cells.append(_difference(diffs[k, budget]))
        out.append(f"| {budget:,} | " + " | ".join(cells) + " |")
    answers = [
        _pays(name(k), name(plain[k[0]]), {b: judge(diffs[k, b]) for b in budgets if diffs[k, b]}) for k in shared
    ]
    return "\n".join(out) + "\n\n" + "\n".join(f"- {a}" for a in answers) + "\n"


def frontier_section(records: list[RunRecord], figure: str) -> Section | None:
    """The frontier table, how its lines are paired, and its figure (`frontier_plot`'s file, by name);
    None where no line has two budgets."""
    table = frontier_markdown(records)
    if not table:
        return None
    notes = (
        "Each line's runs differ only in their parameter budget (model.params): the plain network at the "
        "width that fits, or the ring of the size that meets it. Differences are paired by seed against the "
        "plain line at the same budget. " + rule() + " The list under the table answers from which budget "
        "down each shared line beats the plain one: the largest budget up to which it is better at every "
        "budget.\n\n"
        f"![test top-1 against parameters, each line with its seeds' range]({figure})"
    )
    return Section("The frontier: equal budgets where capacity binds", table, notes)


def _pays(line: str, plain: str, verdicts: dict[int, str]) -> str:
    """Up to which budget `line` is better than `plain` at every budget from the smallest (budgets ascending).
    The other budgets' verdicts are named without the seeds that would settle them: the table has those."""
    better = [b for b in verdicts if all(verdicts[c] == "better" for c in verdicts if c <= b)]
    rest = "; ".join(f"{b:,}: {v.partition(':')[0]}" for b, v in verdicts.items() if b not in better)
    if not better:
        return f"{line} against {plain}: better at no budget from the smallest up ({rest})."
    said = f"{line} against {plain}: better at every budget up to {better[-1]:,} parameters"
    return said + (f"; above it, {rest}." if rest else ".")


def _label(r: RunRecord) -> str:
    """A network as the equal-budget table names it: model, scheme, and what the budget chose."""
    parts = [p for p in r.variant.split(", ") if p and not p.startswith("budget ")]
    return f"{r.model} {r.share}" + (f" ({', '.join(parts)})" if parts else "")


NEAR = 0.02  # an unbudgeted network within this fraction of a budget stands at it (resnet20 block: 170,362)


def equal_budget(records: list[RunRecord]) -> dict[int, dict[str, list[RunRecord]]]:
    """Budgets that at least four networks meet: budget -> network name -> its runs. A network meets
    a budget when it was solved for it (model.params) or, at its family's width, is within NEAR of it."""
    budgets = sorted({r.budget for r in records if r.budget is not None})
    out = {}
    for b in budgets:
        nets: dict[str, list[RunRecord]] = {}
        for r in records:
            if r.budget == b or (r.budget is None and not r.variant and abs(r.params - b) <= NEAR * b):
                nets.setdefault(_label(r), []).append(r)
        if len(nets) >= 4:
            out[b] = nets
    return out


def _reference(nets: dict[str, list[RunRecord]]) -> str | None:
    """The plain network a budget is compared against: the one at its family's width (shallower), else
    the width-scaled one."""
    plain = [k for k, runs in nets.items() if runs[0].share == "none"]
    unscaled = [k for k in plain if nets[k][0].budget is None]
    return (unscaled or plain or [None])[0]


def equal_budget_markdown(records: list[RunRecord]) -> str:
    """Per budget met by four or more networks: each network's test top-1, final training error and
    its difference to the plain reference, paired by seed, most accurate first."""
    out = []
    for b, nets in equal_budget(records).items():
        ref = _reference(nets)
        out += [
            f"Budget {b:,} parameters; differences against {ref or 'no plain network'}, paired by seed:",
            "",
            "| network | params | n | test top-1 % (mean ± std) | final train error % "
            "| vs plain, pts [95 % interval] (verdict) |",
            "|---|---:|---:|---|---:|---|",
        ]
        top1 = {key: mean_std([r.test_top1 for r in runs]) for key, runs in nets.items()}
        for key, runs in sorted(nets.items(), key=lambda kv: -top1[kv[0]][0]):
            errors = [r.train_error for r in runs if r.train_error is not None]
            diffs = paired(runs, nets[ref]) if ref and key != ref else []
            vs = _difference(diffs)
            err = f"{100 * mean_std(errors)[0]:.2f}" if errors else ""
            params = "/".join(f"{p:,}" for p in sorted({r.params for r in runs}))
            score = f"{100 * top1[key][0]:.2f} ± {100 * top1[key][1]:.2f}"
            out.append(f"| {key} | {params} | {len(runs)} | {score} | {err} | {vs} |")
        out.append("")
    return "\n".join(out)


def equal_budget_section(records: list[RunRecord]) -> Section | None:
    """The equal-budget tables and what meeting a budget means; None where no budget has four networks."""
    table = equal_budget_markdown(records)
    if not table:
        return None
    notes = (
        "A network meets a budget when it was solved for it (`model.params`: the widest that fits, or the "
        f"ring of that size) or, at its family's width, is within {100 * NEAR:g} % of it. Most accurate first; "
        "'vs plain' is paired by seed against the plain network at its family's width. " + rule()
    )
    return Section("Equal budgets: which network is most accurate at a given size", table, notes)


def _point(group: list[RunRecord]) -> tuple[int, float, float, float]:
    """A plotted point: its params, the seeds' mean test top-1 in %, and the distances down to the lowest
    seed and up to the highest."""
    tops = [100 * r.test_top1 for r in group]
    mean = sum(tops) / len(tops)
    return group[0].params, mean, mean - min(tops), max(tops) - mean


def frontier_plot(records: list[RunRecord], path: Path) -> Path | None:
    """Test top-1 against parameters (log scale): each line's seed mean, its seeds' range as bars;
    unbudgeted plain networks in the budgets' range as single points."""
    lines = budget_lines(records)
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for key, runs in lines.items():
        xs, ys, lo, hi = zip(*(_point(group) for group in runs.values()), strict=True)
        ns = sorted({len(group) for group in runs.values()})
        n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=f"{name(key)} (n per point {n})")
    top = max(b for runs in lines.values() for b in runs)
    points: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.budget is None and r.share == "none" and r.params <= 1.1 * top:
            points.setdefault(r.model, []).append(r)
    for (model, group), marker in zip(sorted(points.items()), "sD^vP*X", strict=False):
        x, y, lo, hi = _point(group)
        label = f"{model} none (n {len(group)})"
        ax.errorbar([x], [y], yerr=[[lo], [hi]], fmt=marker, capsize=3, color="black", label=label)
    ax.set(xscale="log", xlabel="parameters", ylabel="test top-1 (%), final epoch", title="where capacity binds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
