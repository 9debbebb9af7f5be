"""The papers' three claims, answered from recorded runs.

Each answer is computed, never written by hand, so a regenerated report cannot drift from its
run files: differences are paired by seed where both runs share one (same data order, same
initial draw of the unshared weights), and a difference no larger than its own seed spread (or
one pair alone) is called what it is: not resolved at that number of seeds.

1. Sharing costs little accuracy: ShaResNet reports < 1 point on CIFAR, Dai et al. within 0.5.
2. Intra-block sharing lowers the training error (Dai et al.).
3. A shared deep network beats an unshared network with about the same number of parameters.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .records import RunRecord, mean_std, unresolved

TOLERANCE = {"stage": 0.01, "block": 0.005}  # the accuracy cost each paper reports as "little"
SAME_PARAMS = 0.10  # "about the same number of parameters": within 10%


@dataclass
class Answer:
    claim: str
    comparison: str
    diffs: list[float]  # one per seed pair (or per run when unpaired), in fractions
    verdict: str

    @property
    def mean(self) -> float:
        return mean_std(self.diffs)[0]

    @property
    def std(self) -> float:
        return mean_std(self.diffs)[1]


def _by_seed(records: list[RunRecord], dataset: str, model: str, share: str) -> dict[int, RunRecord]:
    return {r.seed: r for r in records if (r.dataset, r.model, r.share) == (dataset, model, share)}


def _paired(records, dataset, model, share, field) -> list[float]:
    shared, base = _by_seed(records, dataset, model, share), _by_seed(records, dataset, model, "none")
    return [
        getattr(shared[s], field) - getattr(base[s], field)
        for s in sorted(shared.keys() & base.keys())
        if getattr(shared[s], field) is not None and getattr(base[s], field) is not None
    ]


def answer_claims(records: list[RunRecord]) -> list[Answer]:
    answers = []
    groups = sorted(
        {(r.dataset, r.model) for r in records},
        key=lambda g: max(r.params for r in records if (r.dataset, r.model) == g),
    )
    for dataset, model in groups:
        for share, tol in TOLERANCE.items():
            diffs = _paired(records, dataset, model, share, "test_top1")
            if not diffs:
                continue
            cost = -statistics.fmean(diffs)
            verdict = (
                f"holds (no cost: {100 * -cost:+.2f} pts)"
                if cost <= 0
                else f"holds (cost {100 * cost:.2f} <= {100 * tol:g} pts)"
                if cost <= tol
                else f"fails (cost {100 * cost:.2f} > {100 * tol:g} pts)"
            )
            if sign := unresolved(diffs):
                verdict += f"; its sign {sign}"
            answers.append(Answer("1. sharing costs little accuracy", f"{model} {share} - none", diffs, verdict))
    for dataset, model in groups:
        diffs = _paired(records, dataset, model, "block", "train_error")
        if diffs:
            lower = statistics.fmean(diffs) < 0
            verdict = unresolved(diffs) or ("holds" if lower else "fails")
            answers.append(
                Answer("2. block sharing lowers training error", f"{model} block - none (train error)", diffs, verdict)
            )
    answers += _same_params(records)
    return answers


def _same_params(records: list[RunRecord]) -> list[Answer]:
    """Each shared configuration against the unshared network closest to it in parameters (within 10%)."""
    answers = []
    unshared = {(r.dataset, r.model): r.params for r in records if r.share == "none"}
    shared = sorted(
        {(r.dataset, r.model, r.share, r.params) for r in records if r.share != "none"}, key=lambda g: (g[0], g[3])
    )
    for dataset, model, share, params in shared:
        near = [(abs(p - params) / params, m) for (d, m), p in unshared.items() if d == dataset and m != model]
        near = [x for x in near if x[0] <= SAME_PARAMS]
        if not near:
            continue
        other = min(near)[1]
        a = [r.test_top1 for r in records if (r.dataset, r.model, r.share) == (dataset, model, share)]
        b = [r.test_top1 for r in records if (r.dataset, r.model, r.share) == (dataset, other, "none")]
        (mean_a, std_a), (mean_b, std_b) = mean_std(a), mean_std(b)
        diff, spread = mean_a - mean_b, max(std_a, std_b)
        unresolved = f"not resolved at n = {len(a)}" if abs(diff) <= spread or len(a) < 2 else ""
        verdict = unresolved or ("holds" if diff > 0 else "fails")
        answers.append(
            Answer(
                "3. shared deep beats unshared of equal size",
                f"{model} {share} ({params:,}) - {other} none ({unshared[(dataset, other)]:,})",
                [x - mean_b for x in a],
                verdict,
            )
        )
    return answers


def claims_markdown(answers: list[Answer]) -> str:
    if not answers:
        return ""
    lines = [
        "| claim | comparison | difference, pts (mean ± std over seeds) | n | verdict |",
        "|---|---|---|---|---|",
    ]
    for a in answers:
        lines.append(
            f"| {a.claim} | {a.comparison} | {100 * a.mean:+.2f} ± {100 * a.std:.2f} | {len(a.diffs)} | {a.verdict} |"
        )
    return "\n".join(lines) + "\n"
