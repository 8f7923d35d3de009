"""MGD (masked generative distillation) on the shapes pair: MKD's teacher, student, data and
schedule (``mkd.py``), no patch masking of the input (MGD masks features).

MGD's published RetinaNet weight (alpha 2e-5 on a summed MSE) times 7.1, calibrated to MKD's
initial distillation-to-task ratio (``tools/benchmark_distill.py --probe 4``; the ratios:
docs/benchmark.md).
"""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import MGDDistiller

from .mkd import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.masker = None
model.distiller = L(MGDDistiller)(alpha=7.1 * 2e-5, mask_ratio=0.65)
train.output_dir = "./output/shapes/mgd"
