"""MKD on the built-in dataset (CPU): RetinaNet R101 teaches RetinaNet R50."""
from .retinanet_R101_scratch import model as _teacher
from .retinanet_R101_scratch import train as _teacher_train
from .retinanet_R50_scratch import dataloader, lr_multiplier, optimizer, train
from .retinanet_R50_scratch import model as _student
from .retinanet_R50_to_R18_mkd import model

model.student = _student
model.teacher = _teacher
model.teacher_weights = _teacher_train.output_dir + "/model_final.pth"
train.output_dir = "./output/retinanet_R101_to_R50_mkd"
