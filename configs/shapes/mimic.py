"""Feature mimicking (FitNets-style: 1x1 adapter + normalised MSE) on the shapes pair: MKD's
teacher, student, data and schedule (``mkd.py``), no masking.

Weight 2.0, calibrated: at initialisation the distillation-to-task loss ratio is MKD's at its
defaults (``tools/benchmark_distill.py --probe 4``; the ratios: docs/benchmark.md).
"""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import MimicDistiller

from .mkd import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.masker = None
model.distiller = L(MimicDistiller)(weight=2.0, normalize="channel")
train.output_dir = "./output/shapes/mimic"
