"""The study's figures: accuracy against parameters (one marker per scheme) and curves per model."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..models import SCHEMES

MARKERS = dict(zip(SCHEMES, "os^Dvp", strict=False))  # one marker per scheme, in SCHEMES order


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
            ax.annotate(
                r["model"], (r["params"], 100 * r["test_top1"]), fontsize=7, xytext=(4, 2), textcoords="offset points"
            )
    ax.set(xscale="log", xlabel="parameters", ylabel="test top-1 (%)", title="accuracy against parameters")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_per_model(records, path: Path) -> Path:
    """Per model: training loss (top row, seed mean) and test top-1 per epoch (bottom row), one line per scheme."""
    models = sorted({r.model for r in records}, key=lambda m: min(r.params for r in records if r.model == m))
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models), 6.4), squeeze=False)
    for col, model in enumerate(models):
        for share, marker in MARKERS.items():
            runs = [r for r in records if r.model == model and r.share == share]
            for ax, attr, scale, style in (
                (axes[0][col], "loss_curve", 1, {}),
                (axes[1][col], "curve", 100, {"marker": marker}),
            ):
                curves = [getattr(r, attr) for r in runs if getattr(r, attr)]
                if not curves:
                    continue
                length = min(map(len, curves))
                xs = [curves[0][i][0] for i in range(length)]
                ys = [scale * sum(c[i][1] for c in curves) / len(curves) for i in range(length)]
                if attr == "loss_curve":  # logged losses are single batches: a trailing mean of 5 shows the trend
                    ys = [sum(ys[max(0, i - 4) : i + 1]) / len(ys[max(0, i - 4) : i + 1]) for i in range(length)]
                ax.plot(xs, ys, label=f"{share} (n={len(curves)})", **style)
        axes[0][col].set(title=model, xlabel="epoch", ylabel="training loss (mean of 5 logs)", yscale="log")
        axes[1][col].set(xlabel="epoch", ylabel="test top-1 (%)")
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
