"""MKD on ADE20K: semantic FPN R101 (semantic_R101_FPN.py, train it first) teaches semantic FPN
R18 (semantic_R18_FPN.py) on P2-P6."""
from ..common.mkd import model
from .semantic_R18_FPN import dataloader, lr_multiplier, optimizer, train
from .semantic_R18_FPN import model as _student
from .semantic_R18_FPN import train as _student_train
from .semantic_R101_FPN import model as _teacher
from .semantic_R101_FPN import train as _teacher_train

model.student = _student
model.teacher = _teacher
model.teacher_weights = _teacher_train.output_dir + "/model_final.pth"
model.student_weights = _student_train.init_checkpoint

train.init_checkpoint = ""  # the student's weights come from model.student_weights
train.output_dir = "./output/ade20k/semantic_R101_to_R18_mkd"
