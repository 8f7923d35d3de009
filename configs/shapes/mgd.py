"""MGD (masked generative distillation) on the shapes pair: MKD's teacher, student, data and
schedule (``mkd.py``), no patch masking of the input (MGD masks features).

MGD's published RetinaNet weight (alpha 2e-5 on a summed MSE) times 5.9: the digits pair's
calibration to MKD's initial distillation-to-task ratio; recalibrate with
``tools/benchmark_distill.py --probe 4``.
"""
from detectron2.config import LazyCall as L

from mkd.baselines import MGDDistiller

from .mkd import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.masker = None
model.distiller = L(MGDDistiller)(alpha=5.9 * 2e-5, mask_ratio=0.65)
train.output_dir = "./output/shapes/mgd"
