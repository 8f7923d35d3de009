"""Feature mimicking (FitNets-style: 1x1 adapter + normalised MSE) on the MKD pair's machinery:
the same teacher, student, data and schedule as ``retinanet_R50_to_R18_mkd.py``, no masking.

Weight 2.6, calibrated like every method of the benchmark: at initialisation the distillation
loss is 4.3x the task loss, MKD's ratio at its spec defaults (``benchmark_distill.py --probe``).
"""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import MimicDistiller

from .retinanet_R50_to_R18_mkd import dataloader, lr_multiplier, model, optimizer, train

model.masker = None
model.distiller = L(MimicDistiller)(weight=2.6, normalize="channel")
train.output_dir = "./output/retinanet_R50_to_R18_mimic"
