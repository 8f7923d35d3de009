"""Feature mimicking on the shapes proxy with the R34 teacher (``teacher.py``):
``configs/shapes/mimic.py`` with only the teacher changed (an R34-FPN with the student's 128
channels and strides)."""
from ..shapes.mimic import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
from .teacher import model as _teacher
from .teacher import train as _teacher_train

model.teacher = _teacher
model.teacher_weights = _teacher_train.output_dir + "/model_final.pth"
train.output_dir = "./output/shapes_r34/mimic"
