"""`sharenet predict`: class probabilities of image files, with nothing but the model file."""

from __future__ import annotations

from pathlib import Path

import torch

from .artifact import Runner


def predict(runner: Runner, files: list[Path], top_k: int = 1, batch_size: int = 64) -> list[dict]:
    """For each file: its top-k classes with probabilities, preprocessed as the run's test images."""
    pre, classes = runner.preprocess, runner.classes
    k = min(top_k, len(classes))
    rows = []
    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        probs = torch.softmax(runner.run(pre.batch(chunk)).float(), dim=1)
        top = probs.topk(k, dim=1)
        for path, p, idx in zip(chunk, top.values.tolist(), top.indices.tolist(), strict=True):
            rows.append(
                {
                    "file": str(path),
                    "top": [{"class": classes[j], "index": j, "prob": q} for q, j in zip(p, idx, strict=True)],
                }
            )
    return rows


def format_rows(rows: list[dict]) -> str:
    return "\n".join(f"{r['file']}: " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"]) for r in rows)
