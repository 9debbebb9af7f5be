"""The papers' three claims, answered from recorded runs.

Each answer is computed, never written by hand, so a regenerated report cannot drift from its
run files: differences are paired by seed (same data order, same initial draw of the unshared
weights) and judged by the reports' one rule, `records.judge`: a verdict only where the 95 %
interval of the mean difference excludes zero (for claim 1, the paper's tolerance).

1. Sharing costs little accuracy: ShaResNet reports < 1 point on CIFAR, Dai et al. within 0.5.
2. Intra-block sharing lowers the training error (Dai et al.).
3. A shared deep network beats an unshared network with about the same number of parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import RunRecord, Section, judge, mean_std, paired, pts_interval, rule

TOLERANCE = {"stage": 0.01, "block": 0.005}  # the accuracy cost each paper reports as "little"
SAME_PARAMS = 0.10  # "about the same number of parameters": within 10%


@dataclass
class Answer:
    claim: str
    comparison: str
    diffs: list[float]  # one per seed pair, in fractions
    verdict: str

    @property
    def mean(self) -> float:
        return mean_std(self.diffs)[0]


def _runs(records: list[RunRecord], dataset: str, model: str, share: str) -> list[RunRecord]:
    return [r for r in records if (r.dataset, r.model, r.share) == (dataset, model, share)]


def answer_claims(records: list[RunRecord]) -> list[Answer]:
    answers = []
    groups = sorted(
        {(r.dataset, r.model) for r in records},
        key=lambda g: max(r.params for r in records if (r.dataset, r.model) == g),
    )
    for dataset, model in groups:
        for share, tol in TOLERANCE.items():
            diffs = paired(_runs(records, dataset, model, share), _runs(records, dataset, model, "none"))
            if not diffs:
                continue
            # the claim: shared minus unshared accuracy stays above -tol
            verdict = judge(diffs, f"holds (cost < {100 * tol:g} pts)", f"fails (cost > {100 * tol:g} pts)", -tol)
            answers.append(Answer("1. sharing costs little accuracy", f"{model} {share} - none", diffs, verdict))
    for dataset, model in groups:
        block, none = _runs(records, dataset, model, "block"), _runs(records, dataset, model, "none")
        diffs = paired(block, none, "train_error")
        if diffs:
            verdict = judge(diffs, above="fails", below="holds")
            answers.append(
                Answer("2. block sharing lowers training error", f"{model} block - none (train error)", diffs, verdict)
            )
    answers += _same_params(records)
    return answers


def _same_params(records: list[RunRecord]) -> list[Answer]:
    """Each shared configuration against the unshared network closest to it in parameters (within 10%),
    paired by seed."""
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
        diffs = paired(_runs(records, dataset, model, share), _runs(records, dataset, other, "none"))
        if not diffs:
            continue
        answers.append(
            Answer(
                "3. shared deep beats unshared of equal size",
                f"{model} {share} ({params:,}) - {other} none ({unshared[(dataset, other)]:,})",
                diffs,
                judge(diffs, "holds", "fails"),
            )
        )
    return answers


def claims_markdown(answers: list[Answer]) -> str:
    if not answers:
        return ""
    lines = [
        "| claim | comparison | difference, pts: mean [95 % interval] | n | verdict |",
        "|---|---|---|---|---|",
    ]
    for a in answers:
        lines.append(f"| {a.claim} | {a.comparison} | {pts_interval(a.diffs)} | {len(a.diffs)} | {a.verdict} |")
    return "\n".join(lines) + "\n"


def claims_section(records: list[RunRecord]) -> Section | None:
    """The claims answered on the papers' own models (runs without a variant); None where none pairs up."""
    table = claims_markdown(answer_claims([r for r in records if not r.variant]))
    if not table:
        return None
    notes = (
        "Differences are paired by seed: shared minus unshared run of the same seed (claim 2: of the final "
        "training error). " + rule("zero (for claim 1: minus the paper's tolerance, the cost it calls little)")
    )
    return Section("The papers' claims on these runs", table, notes)
