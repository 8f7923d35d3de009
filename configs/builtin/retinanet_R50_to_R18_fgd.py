"""FGD (focal + global distillation) on the MKD pair's machinery.

FGD's RetinaNet weights (alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6) multiply *summed*
losses, which grow with the number of feature positions: COCO's 800x1333 inputs have about 40x
the positions of this dataset's 160x160, so the weights are scaled by 40 to keep FGD's balance
against the task loss.
"""
from detectron2.config import LazyCall as L

from mkd.baselines import FGDDistiller

from .retinanet_R50_to_R18_mkd import dataloader, lr_multiplier, model, optimizer, train

model.masker = None
model.distiller = L(FGDDistiller)(
    temperature=0.5, alpha_fg=40 * 1e-3, beta_bg=40 * 5e-4, gamma_attention=40 * 5e-4,
    lambda_global=40 * 5e-6,
)
train.output_dir = "./output/retinanet_R50_to_R18_fgd"
