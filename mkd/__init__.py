"""Masked Knowledge Distillation (MKD, ICCV 2023) for Detectron2, and feature mimicking, FGD
and MGD on the same machinery.

Importing the package registers the ``FeatureDistillation`` meta-architecture (and ``MKD``, its
name in yacs and saved configs). It registers no dataset: the built-in toy datasets belong to
the research harness, ``mkd_bench``, and register when a config that reads them is loaded.
"""
from .config import add_mkd_config
from .export import export_student
from .modeling import (
    MKD,
    DistillContext,
    FeatureDistillation,
    FeatureDistiller,
    FeatureLoss,
    FGDDistiller,
    GcBlock,
    GlobalLoss,
    MaskedConvolutions,
    MGDDistiller,
    MimicDistiller,
    MKDDecoder,
    MKDDistiller,
    PatchMask,
    PatchMasker,
    ScratchResNet,
    normalize_features,
)
from .solver import distillation_param_groups
from .weights import load_verified_weights, student_state_dict

__all__ = [
    "FeatureDistillation", "MKD", "MKDDecoder", "MKDDistiller", "MimicDistiller", "FGDDistiller",
    "MGDDistiller", "FeatureDistiller", "DistillContext", "FeatureLoss", "GlobalLoss", "GcBlock",
    "normalize_features", "PatchMask", "PatchMasker", "MaskedConvolutions", "ScratchResNet",
    "add_mkd_config", "load_verified_weights", "student_state_dict", "export_student",
    "distillation_param_groups",
]
