"""The segmentation teacher of the shapes proxy: the student's semantic FPN R18, from the same
pretrained bottom-up, trained three times longer (as configs/shapes/teacher.py: on CPU a deeper
ResNet learns more slowly per iteration, so the teacher's extra knowledge comes from its
schedule).

Its own copy of the model edits, not an import of student.py, so that tuning the student does
not change the teacher's config hash and invalidate a cached teacher.
"""
from ..builtin.retinanet_R18_scratch import lr_multiplier, optimizer, train  # noqa: F401
from ..common.data.shapes_sem_seg import dataloader  # noqa: F401
from ..common.models.semantic_fpn import model

model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages.norm = "BN"
model.backbone.bottom_up.stages.depth = 18
del model.backbone.bottom_up.stages.stride_in_1x1
model.backbone.norm = "GN"
model.backbone.out_channels = 128
model.sem_seg_head.conv_dims = 128
model.sem_seg_head.num_classes = 9
model.sem_seg_head.ignore_value = 255

train.max_iter = 600
train.eval_period = 200
train.log_period = 20
train.checkpointer.period = 600
train.output_dir = "./output/shapes_seg/teacher"
# The student's pretrained bottom-up: from scratch this teacher stays too close to the student
# to teach (docs/segmentation.md).
train.init_checkpoint = "./output/pretrained/shapes_R18.pth"
