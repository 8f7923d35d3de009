"""MGD (masked generative distillation) on the MKD pair's machinery.

MGD's published RetinaNet weight (alpha 2e-5 on a summed MSE) times 5.9, calibrated like every
method of the benchmark: at initialisation the distillation loss is 4.3x the task loss, MKD's
ratio at its spec defaults (``tools/benchmark_distill.py --probe 4``; see the FGD config).
"""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import MGDDistiller

from .retinanet_R50_to_R18_mkd import dataloader, lr_multiplier, model, optimizer, train

model.masker = None
model.distiller = L(MGDDistiller)(alpha=5.9 * 2e-5, mask_ratio=0.65)
train.output_dir = "./output/retinanet_R50_to_R18_mgd"
