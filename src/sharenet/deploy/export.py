"""`sharenet export`: a trained model as an ONNX file or a torch.export program, savings kept.

Every distinct tensor is stored once: the file's tensor bytes equal (stored parameters +
BatchNorm running statistics) x 4 bytes, the figure `expected_bytes` gives and the tests hold
every family and scheme to. The file carries the sharenet metadata of the weight file it came
from (config, class names, preprocessing), so `sharenet predict` can run it alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InvalidArgumentError
from ..storage import atomic_write
from . import onnx_graph

FORMATS = ("onnx", "pt2")
METADATA_KEY = "sharenet"  # ONNX metadata_props key / pt2 extra file holding the JSON metadata


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    file_bytes: int
    tensor_bytes: int  # bytes of the stored tensors (initializers and constants)
    expected_bytes: int  # (parameters + BatchNorm running statistics) x 4

    @property
    def overhead(self) -> float:
        """Tensor bytes relative to the expected ones, minus 1 (0.0: each tensor stored exactly once)."""
        return self.tensor_bytes / self.expected_bytes - 1


def expected_bytes(model: torch.nn.Module) -> int:
    """fp32 bytes of the distinct parameters and BatchNorm running statistics an export must store."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(
        b.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
        for b in (m.running_mean, m.running_var)
        if b is not None
    )
    return (params + stats) * 4


def sample_input(model: torch.nn.Module, meta: dict, batch: int) -> torch.Tensor:
    """A batch shaped as the model's inputs: channels and side from the recorded preprocessing."""
    pre = (meta.get("extra") or {}).get("preprocess") or {}
    side = pre.get("size") or model.arch.input_size
    chans = pre.get("channels") or model.config.get("in_chans", 3)
    return torch.randn(batch, chans, side, side, generator=torch.Generator().manual_seed(0))


def parse_batch(batch: str | int) -> int | None:
    """None for a dynamic batch dimension, else the fixed batch size."""
    if batch == "dynamic":
        return None
    try:
        value = int(batch)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise InvalidArgumentError(f"--batch must be 'dynamic' or a positive integer, got {batch!r}")
    return value


def export(
    model: torch.nn.Module,
    out: str | os.PathLike,
    fmt: str,
    meta: dict,
    *,
    batch: str | int = "dynamic",
    opset: int | None = None,
) -> Exported:
    """Export `model` (eval mode, fp32, CPU) to `out`; `meta` is stored in the file."""
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    if opset is not None and fmt != "onnx":
        raise InvalidArgumentError("--opset applies to --format onnx only")
    fixed = parse_batch(batch)
    model = model.float().cpu().eval()
    x = sample_input(model, meta, fixed or 2)  # 2: a dynamic dimension must not be specialised to 1
    dims = None if fixed else ({0: torch.export.Dim("batch", min=1, max=65536)},)
    out = Path(out)
    if fmt == "onnx":
        tensor_bytes = _export_onnx(model, x, dims, out, meta, opset)
    else:
        tensor_bytes = _export_pt2(model, x, dims, out, meta)
    return Exported(out, fmt, out.stat().st_size, tensor_bytes, expected_bytes(model))


def _export_onnx(model, x, dims, out: Path, meta: dict, opset: int | None) -> int:
    onnx = onnx_graph.require("onnx")
    ir = onnx_graph.require("onnx_ir")
    kwargs = {"opset_version": opset} if opset else {}
    with torch.no_grad():
        program = torch.onnx.export(
            model, (x,), dynamo=True, optimize=False, external_data=False, dynamic_shapes=dims, verbose=False, **kwargs
        )
    graph = program.model
    onnx_graph.tidy(graph)
    graph.metadata_props[METADATA_KEY] = json.dumps(meta)
    proto = ir.to_proto(graph)
    del proto.graph.value_info[:]  # shapes of the initializers, which their own records already give
    onnx.checker.check_model(proto)
    atomic_write(out, lambda tmp: onnx.save_model(proto, str(tmp)))
    return onnx_graph.initializer_bytes(proto)


def _export_pt2(model, x, dims, out: Path, meta: dict) -> int:
    with torch.no_grad():
        program = torch.export.export(model, (x,), dynamic_shapes=dims)
    extra = {f"{METADATA_KEY}.json": json.dumps(meta)}
    atomic_write(out, lambda tmp: torch.export.save(program, str(tmp), extra_files=extra))
    return pt2_tensor_bytes(program)


def pt2_tensor_bytes(program) -> int:
    """Bytes of an ExportedProgram's distinct stored tensors (state dict and constants)."""
    seen, total = set(), 0
    for t in [*program.state_dict.values(), *program.constants.values()]:
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.numel() * t.element_size()
    return total
