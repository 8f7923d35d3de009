"""FGD (focal + global distillation) on the MKD pair's machinery.

FGD's published RetinaNet weights (alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6) keep their
balance and share one factor, calibrated like every method of the benchmark to MKD's initial
distillation-to-task ratio (``tools/benchmark_distill.py --probe 4``; the digits pair's ratios:
docs/records/digits.md).
"""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import FGDDistiller

from .retinanet_R50_to_R18_mkd import dataloader, lr_multiplier, model, optimizer, train

model.masker = None
SCALE = 0.36  # on the published weights
model.distiller = L(FGDDistiller)(
    temperature=0.5, alpha_fg=SCALE * 1e-3, beta_bg=SCALE * 5e-4, gamma_attention=SCALE * 5e-4,
    lambda_global=SCALE * 5e-6,
)
train.output_dir = "./output/retinanet_R50_to_R18_fgd"
