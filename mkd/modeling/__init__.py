"""The model: the teacher-student meta-architecture, the student's masking, MKD's decoder, the
losses, and one distiller per method."""
from .backbone import ScratchResNet
from .decoder import MKDDecoder
from .distillers import (
    DistillContext,
    FeatureDistiller,
    FGDDistiller,
    MGDDistiller,
    MimicDistiller,
    MKDDistiller,
)
from .losses import FeatureLoss, GcBlock, GlobalLoss, normalize_features
from .masking import MaskedConvolutions, PatchMask, PatchMasker
from .meta_arch import MKD, FeatureDistillation

__all__ = [
    "FeatureDistillation", "MKD", "MKDDecoder", "MKDDistiller", "MimicDistiller", "FGDDistiller",
    "MGDDistiller", "FeatureDistiller", "DistillContext", "FeatureLoss", "GlobalLoss", "GcBlock",
    "normalize_features", "PatchMask", "PatchMasker", "MaskedConvolutions", "ScratchResNet",
]
