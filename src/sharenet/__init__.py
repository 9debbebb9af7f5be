"""sharenet: parameter-shared residual networks (ShaResNet, intra-block sharing) for PyTorch."""

from .errors import PlanMismatchError, SharenetError, WeightsError
from .models import count_macs, count_params, create_model, describe, list_models, share_groups
from .version import __version__
from .weights import LoadReport, load, load_weights, save, unshare

__all__ = [
    "LoadReport",
    "PlanMismatchError",
    "SharenetError",
    "WeightsError",
    "__version__",
    "count_macs",
    "count_params",
    "create_model",
    "describe",
    "list_models",
    "load",
    "load_weights",
    "save",
    "share_groups",
    "unshare",
]
