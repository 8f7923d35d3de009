"""MKD on the shapes proxy (CPU): the long-trained teacher (``teacher.py``) teaches the student
(``student.py``, same architecture, short schedule).

The student keeps ``student.py``'s data, optimizer and schedule, so it compares one-to-one with
the undistilled student. ``tools/benchmark_distill.py`` trains and caches the teacher and sets
``model.teacher_weights``; by hand: train ``teacher.py`` first.
"""
from ..common.mkd import model
from .student import dataloader, lr_multiplier, optimizer, train
from .student import model as _student
from .teacher import model as _teacher
from .teacher import train as _teacher_train

model.student = _student
model.teacher = _teacher
# The student starts from the undistilled student's pretrained bottom-up: an MKD model takes it
# as student_weights (verified to cover the whole bottom-up); its train.init_checkpoint is for
# MKD checkpoints only.
model.student_weights = train.init_checkpoint
train.init_checkpoint = ""
model.teacher_weights = _teacher_train.output_dir + "/model_final.pth"
train.output_dir = "./output/shapes/mkd"
