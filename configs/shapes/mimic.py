"""Feature mimicking (FitNets-style: 1x1 adapter + normalised MSE) on the shapes pair: MKD's
teacher, student, data and schedule (``mkd.py``), no masking.

Weight 2.6: the digits pair's calibration (initial distillation loss 4.3x the task loss, MKD's
ratio at its defaults); recalibrate with ``tools/benchmark_distill.py --probe 4``.
"""
from detectron2.config import LazyCall as L

from mkd.baselines import MimicDistiller

from .mkd import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.masker = None
model.distiller = L(MimicDistiller)(weight=2.6, normalize="channel")
train.output_dir = "./output/shapes/mimic"
