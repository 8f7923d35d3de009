"""MKD on the built-in dataset (CPU): Mask R-CNN R101 teaches Mask R-CNN R50."""
from .mask_rcnn_R101_scratch import model as _teacher
from .mask_rcnn_R101_scratch import train as _teacher_train
from .mask_rcnn_R50_scratch import dataloader, lr_multiplier, optimizer, train
from .mask_rcnn_R50_scratch import model as _student
from .retinanet_R50_to_R18_mkd import model

model.student = _student
model.teacher = _teacher
model.teacher_weights = _teacher_train.output_dir + "/model_final.pth"
train.output_dir = "./output/mask_rcnn_R101_to_R50_mkd"
