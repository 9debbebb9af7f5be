"""The study's figures: accuracy against parameters (one marker per scheme) and curves per model."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MARKERS = {"none": "o", "stage": "s", "block": "^"}


def accuracy_vs_params(rows: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for share, marker in MARKERS.items():
        pts = [r for r in rows if r["share"] == share]
        if not pts:
            continue
        xs, ys = [r["params"] for r in pts], [100 * r["test_top1"] for r in pts]
        errs = [100 * r["test_top1_std"] for r in pts]
        ax.errorbar(xs, ys, yerr=errs, fmt=marker, capsize=3, label=f"share={share}")
        for r in pts:
            ax.annotate(r["model"], (r["params"], 100 * r["test_top1"]), fontsize=7, xytext=(4, 2),
                        textcoords="offset points")  # fmt: skip
    ax.set(xscale="log", xlabel="parameters", ylabel="test top-1 (%)", title="accuracy against parameters")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_per_model(records, path: Path) -> Path:
    models = sorted({r.model for r in records}, key=lambda m: min(r.params for r in records if r.model == m))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for share, marker in MARKERS.items():
            runs = [r for r in records if r.model == model and r.share == share and r.curve]
            if not runs:
                continue
            length = min(len(r.curve) for r in runs)
            xs = [runs[0].curve[i][0] for i in range(length)]
            ys = [100 * sum(r.curve[i][1] for r in runs) / len(runs) for i in range(length)]
            ax.plot(xs, ys, marker=marker, label=f"{share} (n={len(runs)})")
        ax.set(title=model, xlabel="epoch", ylabel="test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
