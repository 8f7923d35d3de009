"""RetinaNet R50-FPN on COCO from ImageNet, 2x schedule, no teacher: the plain student of
``retinanet_R101_to_R50_mkd_2x.py`` (its model, data, optimizer and schedule), the baseline its
distilled students are compared with. The model is plain Detectron2; the file reads the MKD
config it edits, so loading it imports ``mkd``."""
from .retinanet_R101_to_R50_mkd_2x import (  # noqa: F401
    dataloader, lr_multiplier, optimizer, train,
)
from .retinanet_R101_to_R50_mkd_2x import model as _mkd

model = _mkd.student
train.init_checkpoint = _mkd.student_weights  # Detectron2's way to start from ImageNet
train.output_dir = "./output/coco/retinanet_R50_2x"
