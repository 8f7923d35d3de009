"""MKD on the shapes segmentation proxy (CPU): the long-trained teacher (``teacher.py``)
teaches the student (``student.py``, same architecture, short schedule), on FPN levels P2-P6.

The student keeps ``student.py``'s data, optimizer and schedule, so it compares one-to-one with
the undistilled student. Train ``teacher.py`` first (or set ``model.teacher_weights``).
"""
from ..common.mkd import model
from .student import dataloader, lr_multiplier, optimizer, train
from .student import model as _student
from .teacher import model as _teacher
from .teacher import train as _teacher_train

model.student = _student
model.teacher = _teacher
# The student starts from the plain student's pretrained bottom-up (as configs/shapes/mkd.py).
model.student_weights = train.init_checkpoint
train.init_checkpoint = ""
model.teacher_weights = _teacher_train.output_dir + "/model_final.pth"
train.output_dir = "./output/shapes_seg/mkd"
