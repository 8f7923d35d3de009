"""MKD on COCO: the model zoo's RetinaNet R50-FPN 3x (38.7 box AP) teaches RetinaNet R18-FPN
(the paper's R18 student reaches 37.5 AP from 33.4).

The model zoo has no ImageNet ResNet-18: convert torchvision's with Detectron2's
``tools/convert-torchvision-to-d2.py`` into ``R-18.pkl`` and set ``model.student_weights``.
"""
from .retinanet_R101_to_R50_mkd_2x import dataloader, lr_multiplier, model, optimizer, train

model.teacher.backbone.bottom_up.stages.depth = 50
model.teacher_weights = (
    "detectron2://COCO-Detection/retinanet_R_50_FPN_3x/190397829/model_final_5bd44e.pkl"
)

model.student.backbone.bottom_up.stages.depth = 18
del model.student.backbone.bottom_up.stages.stride_in_1x1  # BasicBlock has no 1x1 conv
model.student.backbone.top_block.in_channels = 512  # R18's res5
model.student_weights = "./R-18.pkl"

train.output_dir = "./output/coco/retinanet_R50_to_R18_mkd_2x"
