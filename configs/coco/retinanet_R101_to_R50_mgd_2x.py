"""MGD (masked generative distillation, Yang et al., ECCV 2022) on COCO at its published
RetinaNet weights: alpha 2e-5, feature mask ratio 0.65 (``mkd.baselines.MGDDistiller``), on the
teacher, student, data and schedule of ``retinanet_R101_to_R50_mkd_2x.py``, no input masking."""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import MGDDistiller

from .retinanet_R101_to_R50_mkd_2x import (  # noqa: F401
    dataloader, lr_multiplier, model, optimizer, train,
)

model.masker = None
model.distiller = L(MGDDistiller)(alpha=2e-5, mask_ratio=0.65)
train.output_dir = "./output/coco/retinanet_R101_to_R50_mgd_2x"
