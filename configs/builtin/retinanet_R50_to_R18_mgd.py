"""MGD (masked generative distillation) on the MKD pair's machinery.

MGD's RetinaNet weight alpha = 2e-5 multiplies a *summed* MSE; scaled by 40 for this dataset's
~40x fewer feature positions than COCO's (see ``retinanet_R50_to_R18_fgd.py``).
"""
from detectron2.config import LazyCall as L

from mkd.baselines import MGDDistiller

from .retinanet_R50_to_R18_mkd import dataloader, lr_multiplier, model, optimizer, train

model.masker = None
model.distiller = L(MGDDistiller)(alpha=40 * 2e-5, mask_ratio=0.65)
train.output_dir = "./output/retinanet_R50_to_R18_mgd"
