"""Feature mimicking (1x1 adapter + normalised MSE) on the shapes segmentation pair: MKD's
teacher, student, data and schedule (``mkd.py``), no masking.

Weight 2.6: the detection proxy's calibration (configs/shapes/mimic.py); not yet recalibrated
for segmentation.
"""
from detectron2.config import LazyCall as L

from mkd.baselines import MimicDistiller

from .mkd import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.masker = None
model.distiller = L(MimicDistiller)(weight=2.6, normalize="channel")
train.output_dir = "./output/shapes_seg/mimic"
