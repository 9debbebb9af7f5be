"""What `sharenet predict`, `export` and `bench --infer` accept: a run directory, a weight file or an export.

Each opens to a `Runner`: a callable from a normalised batch to logits, with the class names and
preprocessing recorded at training time. A run directory means its model.safetensors; an .onnx
file runs in onnxruntime; a .pt2 file is a torch.export program.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.preprocess import Preprocess
from ..errors import WeightsError
from ..rundir import WEIGHTS
from ..weights import load
from ..weights.files import read_metadata
from . import onnx_graph
from .export import METADATA_KEY


@dataclass
class Runner:
    """A model ready for inference: `run(x)` maps a (N, C, H, W) float batch to (N, classes) logits."""

    path: Path
    kind: str  # "safetensors" | "onnx" | "pt2"
    run: Callable[[torch.Tensor], torch.Tensor]
    meta: dict  # sharenet metadata: config, classes, preprocess, ...

    @property
    def classes(self) -> list[str]:
        names = (self.meta.get("extra") or {}).get("classes")
        return list(names) if names else [str(i) for i in range(self.meta["config"]["num_classes"])]

    @property
    def preprocess(self) -> Preprocess:
        recorded = (self.meta.get("extra") or {}).get("preprocess")
        if not recorded:
            raise WeightsError(
                f"{self.path} records no preprocessing (it was imported, or written before sharenet recorded it); "
                "predict runs models trained by `sharenet train`"
            )
        return Preprocess.from_dict(recorded)


def weights_path(source: str | Path) -> Path:
    """The weight file a run directory or path names."""
    path = Path(source)
    if path.is_dir():
        path = path / WEIGHTS
        if not path.is_file():
            raise WeightsError(f"{source} holds no {WEIGHTS}: the run has not finished (sharenet train --resume auto)")
    elif not path.is_file():
        raise WeightsError(f"{source} does not exist (expected a run directory, .safetensors, .onnx or .pt2 file)")
    return path


def load_model(source: str | Path) -> tuple[torch.nn.Module, dict]:
    """The eager model of a run directory or sharenet .safetensors file, and its metadata."""
    path = weights_path(source)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path} is not a sharenet weight file (.safetensors) or run directory")
    model = load(path)
    return model.eval(), read_metadata(path)


def open_runner(source: str | Path, threads: int | None = None) -> Runner:
    path = weights_path(source)
    if path.suffix == ".onnx":
        return _onnx_runner(path, threads)
    if path.suffix == ".pt2":
        return _pt2_runner(path)
    model, meta = load_model(path)
    return Runner(path, "safetensors", _no_grad(model), meta)


def _no_grad(fn: Callable) -> Callable:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x)

    return run


def onnx_session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session of an ONNX file (all graph optimisations on, as deployed)."""
    ort = onnx_graph.require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a corrupt or foreign file
        raise WeightsError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None


def _onnx_runner(path: Path, threads: int | None) -> Runner:
    session = onnx_session(path, threads)
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if not raw:
        raise WeightsError(f"{path} carries no sharenet metadata: export it with `sharenet export`")
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.numpy(), np.float32)})[0])

    return Runner(path, "onnx", run, json.loads(raw))


def _pt2_runner(path: Path) -> Runner:
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as e:  # torch.export.load raises many types for a corrupt or foreign file
        raise WeightsError(f"cannot load exported program {path}: {str(e).splitlines()[0]}") from None
    if not extra[f"{METADATA_KEY}.json"]:
        raise WeightsError(f"{path} carries no sharenet metadata: export it with `sharenet export`")
    return Runner(path, "pt2", _no_grad(program.module()), json.loads(extra[f"{METADATA_KEY}.json"]))
