"""Distillers, one module per method, all of one interface (``base.FeatureDistiller``)."""
from .base import AlignedDistiller, DistillContext, FeatureDistiller, scale_gradient
from .fgd import FGDDistiller, fgd_attention, fgd_foreground_masks
from .mgd import MGDDistiller, mgd_keep_mask
from .mimic import MimicDistiller
from .mkd import MKDDistiller

__all__ = [
    "AlignedDistiller", "DistillContext", "FeatureDistiller", "FGDDistiller", "MGDDistiller",
    "MKDDistiller", "MimicDistiller", "fgd_attention", "fgd_foreground_masks", "mgd_keep_mask",
    "scale_gradient",
]
