"""The teacher of the shapes proxy: the student's RetinaNet R18-FPN trained three times longer.

Its own copy of the recipe, not an import of student.py, so that tuning the student does not
change the teacher's config hash and invalidate the cached teacher. From scratch on 2 CPU cores a
deeper ResNet learns more slowly per iteration than R18, so the teacher's extra knowledge comes
from its schedule (the LR schedule of the built-in configs stretches with max_iter). Measured:
40.5 box AP at 600 iterations (9.0 at 200, 23.2 at 400), 23 min on one shared CPU thread.
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
