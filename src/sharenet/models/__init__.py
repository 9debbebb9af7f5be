"""Parameter-shared residual networks: blocks, stages that own shared kernels, families, registry."""

from . import fused
from .accounting import count_macs, count_params, describe, share_groups
from .layers import Conv3x3, SharedKernel
from .norm_act import BatchNormAct2d, use_fused_kernel
from .registry import NAME_FORMS, create_model, list_models
from .resnet import ResNet
from .sharing import SCHEMES, SHARING_RULES

__all__ = [
    "NAME_FORMS",
    "SCHEMES",
    "SHARING_RULES",
    "BatchNormAct2d",
    "Conv3x3",
    "ResNet",
    "SharedKernel",
    "count_macs",
    "count_params",
    "create_model",
    "describe",
    "fused",
    "list_models",
    "share_groups",
    "use_fused_kernel",
]
