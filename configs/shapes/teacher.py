"""The teacher of the shapes proxy: the student's RetinaNet R18-FPN, from the same pretrained
bottom-up (``output/pretrained/shapes_R18.pth``, tools/pretrain_backbone.py), trained 2.4 times
longer.

Its own copy of the recipe, not an import of student.py, so that tuning the student does not
change the teacher's config hash and invalidate the cached teacher. Its accuracy and cost:
docs/benchmark.md.
"""
from ..builtin.retinanet_R18_scratch import (  # noqa: F401  a LazyConfig is its globals
    lr_multiplier,
    model,
    optimizer,
    train,
)
from ..common.data.shapes import dataloader  # noqa: F401

model.num_classes = 8
train.max_iter = 600
train.eval_period = 200
train.log_period = 20
train.checkpointer.period = 600
train.output_dir = "./output/shapes/teacher"
# The student's pretrained bottom-up (tools/pretrain_backbone.py): a teacher from scratch would
# know less than the pretrained student.
train.init_checkpoint = "./output/pretrained/shapes_R18.pth"
