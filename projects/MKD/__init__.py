"""Masked Knowledge Distillation (MKD, ICCV 2023) for Detectron2.

Importing the package registers the ``MKD`` meta-architecture and the built-in datasets.
"""
from . import data  # noqa: F401  (registers mkd_digits_{train,val})
from .config import add_mkd_config
from .decoder import MKDDecoder
from .distillers import DistillContext, FeatureDistiller, MKDDistiller
from .losses import FeatureLoss, GcBlock, GlobalLoss, normalize_features
from .masking import MaskedConvolutions, PatchMask, PatchMasker
from .meta_arch import MKD
from .solver import distillation_param_groups
from .weights import load_verified_weights, student_state_dict

__all__ = [
    "MKD", "MKDDecoder", "MKDDistiller", "FeatureDistiller", "DistillContext", "FeatureLoss",
    "GlobalLoss", "GcBlock", "normalize_features", "PatchMask", "PatchMasker",
    "MaskedConvolutions", "add_mkd_config", "load_verified_weights", "student_state_dict",
    "distillation_param_groups",
]
