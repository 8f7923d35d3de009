"""MKD on COCO: the model zoo's RetinaNet R50-FPN 3x (38.7 box AP) teaches RetinaNet R18-FPN
(the paper's R18 student reaches 37.5 AP from 33.4).

The model zoo has no ImageNet ResNet-18: convert torchvision's with Detectron2's
``tools/convert-torchvision-to-d2.py`` into ``./R-18.pkl`` (or set ``model.student_weights``).
Torchvision's weights read RGB images normalised by ImageNet's mean and std, unlike the MSRA
weights of the model zoo (BGR, std absorbed into conv1), so the student and the data loader
read RGB while the teacher keeps BGR: MKD hands the teacher the image in its own channel order.
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
# What convert-torchvision-to-d2.py says its weights need (ImageNet statistics in RGB order).
model.student.input_format = "RGB"
model.student.pixel_mean = [123.675, 116.280, 103.530]
model.student.pixel_std = [58.395, 57.120, 57.375]
dataloader.train.mapper.image_format = "RGB"  # the student's order; the test loader follows it

train.output_dir = "./output/coco/retinanet_R50_to_R18_mkd_2x"
