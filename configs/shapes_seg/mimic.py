"""Feature mimicking (1x1 adapter + normalised MSE) on the shapes segmentation pair: MKD's
teacher, student, data and schedule (``mkd.py``), no masking.

Weight 2.6: the digits detection pair's calibration (configs/builtin/retinanet_R50_to_R18_mimic.py),
not recalibrated here. On this pair (``tools/benchmark_distill.py --task sem_seg --probe 4``) its
initial distillation-to-task ratio is 0.29 against MKD's 0.22 (factor 0.75 to MKD's).
"""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import MimicDistiller

from .mkd import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.masker = None
model.distiller = L(MimicDistiller)(weight=2.6, normalize="channel")
train.output_dir = "./output/shapes_seg/mimic"
