"""int8 post-training quantization of an exported ONNX model with onnxruntime's own tools.

Static QDQ quantization: int8 per-channel weights, uint8 activations whose ranges are calibrated
on training images. onnxruntime quantizes an initializer once, whatever the number of convs that
read it, so a shared kernel is one int8 tensor with one set of scales (tests count them). The
graph is quantized as exported, without onnxruntime's pre-processing pass: that pass folds each
BatchNorm into the conv before it, which would copy a shared kernel once per use.

Weights use 7 of their 8 bits (`reduce_range`) because the file must be right on whichever CPU
runs it. On x86 CPUs without VNNI, onnxruntime multiplies uint8 activations by int8 weights with
VPMADDUBSW, whose int16 sums of pairs saturate; VNNI's instruction does not (onnxruntime's
`quantize_static` documentation gives the same advice for x86 without VNNI). What that costs in
accuracy on an AVX2-only CPU: docs/design-notes.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..storage import atomic_write
from . import onnx_graph


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a tensor of images."""

    def __init__(self, name: str, x: torch.Tensor, batch: int):
        self.items = iter(
            [{name: np.ascontiguousarray(x[i : i + batch].numpy(), np.float32)} for i in range(0, len(x), batch)]
        )

    def get_next(self):
        return next(self.items, None)


def quantize(onnx_path: str | os.PathLike, out: str | os.PathLike, calibration: torch.Tensor, batch: int = 64) -> Path:
    """Write the int8 model of `onnx_path` to `out`, calibrated on `calibration` (preprocessed images)."""
    onnx = onnx_graph.require("onnx")
    q = onnx_graph.require("onnxruntime.quantization")
    model = onnx.load(str(onnx_path))
    name = model.graph.input[0].name
    out = Path(out)

    def write(tmp: Path) -> None:
        q.quantize_static(
            model,
            str(tmp),
            _Batches(name, calibration, batch),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
            reduce_range=True,
        )

    atomic_write(out, write)
    return out
