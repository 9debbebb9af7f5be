"""Weight files: sharenet's own safetensors format, peer layouts, fusion and unsharing."""

from .files import load, read_safetensors, save
from .transfer import LoadReport, load_weights, unshare, unshared_state_dict

__all__ = ["LoadReport", "load", "load_weights", "read_safetensors", "save", "unshare", "unshared_state_dict"]
