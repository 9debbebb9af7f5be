"""Parameter-shared residual networks: the sharing plan, blocks, stages that own shared tensors, families, registry."""

from . import fused
from .accounting import count_macs, count_params, describe, share_groups
from .blocks import zero_init_residual
from .layers import Conv3x3, SharedKernel
from .learned import BasisConv3x3, TemplateBank, TemplateConv3x3, basis_penalty
from .norm_act import BatchNormAct2d, use_fused_kernel
from .plan import RULES, SCHEMES, SharePlan, Sharing, make_plan
from .registry import NAME_FORMS, create_model, list_models
from .resnet import ResNet

__all__ = [
    "NAME_FORMS",
    "RULES",
    "SCHEMES",
    "BasisConv3x3",
    "BatchNormAct2d",
    "Conv3x3",
    "ResNet",
    "SharePlan",
    "SharedKernel",
    "Sharing",
    "TemplateBank",
    "TemplateConv3x3",
    "basis_penalty",
    "count_macs",
    "count_params",
    "create_model",
    "describe",
    "fused",
    "list_models",
    "make_plan",
    "share_groups",
    "use_fused_kernel",
    "zero_init_residual",
]
