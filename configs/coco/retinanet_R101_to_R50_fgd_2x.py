"""FGD (focal and global distillation, Yang et al., CVPR 2022) on COCO at its published RetinaNet
weights: alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6, temperature 0.5
(``mkd.baselines.FGDDistiller``), on the teacher, student, data and schedule of
``retinanet_R101_to_R50_mkd_2x.py``, no masking. FGD's published numbers also start the
student's neck and head from the teacher's: add ``model.init_student_from_teacher=True``."""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import FGDDistiller

from .retinanet_R101_to_R50_mkd_2x import (  # noqa: F401
    dataloader, lr_multiplier, model, optimizer, train,
)

model.masker = None
model.distiller = L(FGDDistiller)(
    temperature=0.5, alpha_fg=1e-3, beta_bg=5e-4, gamma_attention=5e-4, lambda_global=5e-6,
)
train.output_dir = "./output/coco/retinanet_R101_to_R50_fgd_2x"
