"""The old import path of the comparison distillers (``mkd.baselines.MimicDistiller`` ...):
configs saved by earlier versions name their ``_target_`` here. New code imports them from
``mkd`` or ``mkd.modeling.distillers``."""
from .modeling.distillers import FGDDistiller, MGDDistiller, MimicDistiller

__all__ = ["MimicDistiller", "FGDDistiller", "MGDDistiller"]
