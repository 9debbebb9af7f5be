"""PNG figures rendered with matplotlib (Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def training_curves(rows: list[dict], path: Path, title: str) -> Path:
    """Loss and accuracy against epoch, train and test, from metrics.jsonl epoch rows."""
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["epoch"] for r in epochs]
    ax_loss.plot(x, [r["train_loss"] for r in epochs], "o-", label="train")
    ax_loss.plot(x, [r["test_loss"] for r in epochs], "s-", label="test")
    ax_acc.plot(x, [100 * r["train_acc"] for r in epochs], "o-", label="train")
    ax_acc.plot(x, [100 * r["test_top1"] for r in epochs], "s-", label="test top-1")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix(matrix, classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: prediction)."""
    m = matrix.float()
    m = m / m.sum(1, keepdim=True).clamp_min(1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(m.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{100 * m[i, j]:.0f}",
                    ha="center",
                    va="center",
                    color="white" if m[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
