"""FGD (focal + global distillation) on the shapes pair: MKD's teacher, student, data and
schedule (``mkd.py``), no masking.

FGD's published RetinaNet weights (alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6) keep their
balance and share one factor, calibrated like every method of the benchmark to MKD's initial
distillation-to-task ratio (``tools/benchmark_distill.py --probe 4``): on this pair that is the
published scale itself (the ratios: docs/benchmark.md). FGD's own recipe
(published scale, student initialised from the teacher) is ``fgd_recipe.py``.
"""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import FGDDistiller

from .mkd import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.masker = None
SCALE = 1.0  # on the published weights
model.distiller = L(FGDDistiller)(
    temperature=0.5, alpha_fg=SCALE * 1e-3, beta_bg=SCALE * 5e-4, gamma_attention=SCALE * 5e-4,
    lambda_global=SCALE * 5e-6,
)
train.output_dir = "./output/shapes/fgd"
