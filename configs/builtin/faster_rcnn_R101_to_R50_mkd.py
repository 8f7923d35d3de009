"""MKD on the built-in dataset (CPU): Faster R-CNN R101 teaches Faster R-CNN R50."""
from .faster_rcnn_R101_scratch import model as _teacher
from .faster_rcnn_R101_scratch import train as _teacher_train
from .faster_rcnn_R50_scratch import dataloader, lr_multiplier, optimizer, train
from .faster_rcnn_R50_scratch import model as _student
from .retinanet_R50_to_R18_mkd import model

model.student = _student
model.teacher = _teacher
model.teacher_weights = _teacher_train.output_dir + "/model_final.pth"
train.output_dir = "./output/faster_rcnn_R101_to_R50_mkd"
