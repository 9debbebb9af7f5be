"""sharenet: parameter-shared residual networks for PyTorch.

ShaResNet's per-stage and Dai et al.'s intra-block sharing, learned sharing (template banks,
filter bases), RPG's parameter ring at any parameter count (`params=`), and relaxed sharing (a
shared kernel plus a low-rank correction per conv, `relax_rank=`), with exact counts, weight files
that rebuild their plan, unshare, and fitting a trained network into a shared one."""

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
