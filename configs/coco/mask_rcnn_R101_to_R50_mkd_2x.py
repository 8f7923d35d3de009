"""MKD on COCO: the model zoo's Mask R-CNN R101-FPN 3x (42.9 box / 38.6 mask AP) teaches
Mask R-CNN R50-FPN (ImageNet init, 2x schedule)."""
from detectron2 import model_zoo

from ..common.mkd import model

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.evaluator.use_fast_impl = False  # True with a source build of Detectron2

model.teacher = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.teacher.backbone.bottom_up.stages.depth = 101
model.teacher_weights = (
    "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x/138205316/model_final_a3ec72.pkl"
)

model.student = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.student.backbone.bottom_up.freeze_at = 2
model.student_weights = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"

optimizer = model_zoo.get_config("common/optim.py").SGD
lr_multiplier = model_zoo.get_config("common/coco_schedule.py").lr_multiplier_2x
train = model_zoo.get_config("common/train.py").train
train.max_iter = 180000
train.output_dir = "./output/coco/mask_rcnn_R101_to_R50_mkd_2x"
