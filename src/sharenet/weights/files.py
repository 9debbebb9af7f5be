"""sharenet's own weight files: safetensors with the model config, sharing plan and a checksum.

The metadata makes a file self-describing (`load(path)` rebuilds the model from it alone), and
the SHA-256 of the tensor bytes catches corruption that safetensors' header checks cannot see.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import WeightsError
from ..models import ResNet, create_model, share_groups
from ..storage import atomic_write, tensors_digest
from ..version import __version__

FORMAT = 1


def save(model: ResNet, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the model's weights with everything needed to rebuild it (`extra`: free-form JSON)."""
    if not getattr(model, "config", None):
        raise WeightsError("sharenet.save needs a model built by sharenet.create_model")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "sharenet_version": __version__,
        "config": model.config,
        "plan": share_groups(model),
        "sha256": tensors_digest(tensors),
        "extra": extra or {},
    }
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"sharenet": json.dumps(meta)}))
    return path


def read_metadata(path: str | os.PathLike) -> dict | None:
    """sharenet metadata of a safetensors file, or None for a foreign safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("sharenet")
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"weight file {path} is corrupt or not safetensors: {e}") from None
    return json.loads(raw) if raw else None


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Tensors and sharenet metadata of a file, its checksum verified when it has one."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist")
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"weight file {path} is corrupt: {e}") from None
    if meta and meta.get("sha256") and tensors_digest(tensors) != meta["sha256"]:
        raise WeightsError(f"weight file {path} is corrupt: checksum mismatch")
    return tensors, meta


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ResNet:
    """Rebuild a model from a file written by `save`."""
    tensors, meta = read_safetensors(path)
    if not meta:
        raise WeightsError(
            f"{path} has no sharenet metadata; build the model with sharenet.create_model and "
            "use sharenet.load_weights(model, path) for other layouts"
        )
    if meta.get("format", 0) > FORMAT:
        raise WeightsError(f"{path} uses weight format {meta['format']}, newer than this sharenet ({FORMAT})")
    model = create_model(**meta["config"])
    if share_groups(model) != meta["plan"]:
        raise WeightsError(f"{path}: its sharing plan differs from what this sharenet builds for {model.config}")
    model.load_state_dict(tensors)
    return model.to(map_location)
