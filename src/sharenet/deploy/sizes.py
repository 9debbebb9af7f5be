"""File sizes of each scheme as shipped: safetensors, ONNX and int8 ONNX (`sharenet params --sizes`).

Sizes depend on the tensors' shapes, not their values, so the models are freshly initialised and
int8 is calibrated on random images; the table is what a trained model of each kind weighs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..models import count_params, create_model
from ..weights import save
from .export import export
from .quantize import quantize

MODELS = ("resnet20", "resnet56")
SCHEMES = ("none", "stage", "block", "templates", "basis")


def size_row(name: str, share: str, tmp: Path, num_classes: int = 10, in_chans: int = 3) -> dict:
    model = create_model(name, share=share, num_classes=num_classes, in_chans=in_chans).eval()
    meta = {"config": model.config, "extra": {}}
    weights = save(model, tmp / f"{name}-{share}.safetensors")
    fp32 = export(model, tmp / f"{name}-{share}.onnx", "onnx", meta)
    calibration = torch.randn(32, in_chans, model.arch.input_size, model.arch.input_size)
    int8 = None if share == "ring" else quantize(fp32.path, tmp / f"{name}-{share}-int8.onnx", calibration)
    return {
        "model": name,
        "share": share,
        "params": count_params(model),
        "safetensors_bytes": weights.stat().st_size,
        "onnx_bytes": fp32.file_bytes,
        "onnx_tensor_bytes": fp32.tensor_bytes,
        "expected_bytes": fp32.expected_bytes,
        "int8_bytes": int8.stat().st_size if int8 else None,
    }


def size_table(models=MODELS, schemes=SCHEMES) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        return [size_row(m, s, Path(tmp)) for m in models for s in schemes]


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def format_sizes(rows: list[dict]) -> str:
    """Bytes per file; "stored" is the ONNX file's tensor bytes over (parameters + BatchNorm statistics) x 4."""
    head = f"{'model':<10}{'share':<11}{'params':>10}{'safetensors':>13}{'ONNX':>12}{'stored':>9}{'int8 ONNX':>12}"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['model']:<10}{r['share']:<11}{r['params']:>10,}{r['safetensors_bytes']:>13,}{r['onnx_bytes']:>12,}"
            f"{r['onnx_tensor_bytes'] / r['expected_bytes']:>8.3f}x{_bytes(r['int8_bytes']):>12}"
        )
    return "\n".join(lines)
