"""int8 post-training quantization of an exported ONNX model with onnxruntime's own tools.

Static QDQ quantization: int8 per-channel weights, uint8 activations whose ranges are calibrated
on training images. onnxruntime quantizes an initializer once, whatever the number of convs that
read it, so a shared kernel is one int8 tensor with one set of scales (tests count them). The
graph is quantized as exported, without onnxruntime's pre-processing pass: that pass folds each
BatchNorm into the conv before it, which would copy a shared kernel once per use.
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
        self.items = iter([{name: np.ascontiguousarray(x[i : i + batch].numpy(), np.float32)}
                           for i in range(0, len(x), batch)])  # fmt: skip

    def get_next(self):
        return next(self.items, None)


def quantize(onnx_path: str | os.PathLike, out: str | os.PathLike, calibration: torch.Tensor,
             batch: int = 64) -> Path:  # fmt: skip
    """Write the int8 model of `onnx_path` to `out`, calibrated on `calibration` (preprocessed images)."""
    onnx = onnx_graph.require("onnx")
    q = onnx_graph.require("onnxruntime.quantization")
    model = onnx.load(str(onnx_path))
    name = model.graph.input[0].name
    out = Path(out)

    def write(tmp: Path) -> None:
        q.quantize_static(
            model, str(tmp), _Batches(name, calibration, batch),
            quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )  # fmt: skip

    atomic_write(out, write)
    return out
