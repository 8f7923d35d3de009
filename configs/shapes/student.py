"""The student of the shapes proxy: RetinaNet R18-FPN from scratch at the short student schedule.

configs/builtin/retinanet_R18_scratch.py on the shapes dataset (8 classes, 128 px). The
distillation configs of this directory import their student and schedule from here. Measured on
2 shared CPU cores, one thread per run: 6.5 ± 0.35 box AP over 3 seeds at 200 iterations
(7-8.5 min, 2.1-2.5 s/iter), 17.3 ± 2.8 at 400; the teacher (teacher.py) reaches 40.5.
"""
from ..builtin.retinanet_R18_scratch import (  # noqa: F401  a LazyConfig is its globals
    lr_multiplier,
    model,
    optimizer,
    train,
)
from ..common.data.shapes import dataloader  # noqa: F401

model.num_classes = 8
train.max_iter = 200
train.eval_period = 100
train.log_period = 20
train.checkpointer.period = 200
train.output_dir = "./output/shapes/student"
# The bottom-up pretrained on crops of the train split (tools/pretrain_backbone.py, which writes
# this link): the rest of the detector starts random, as from ImageNet weights.
train.init_checkpoint = "./output/pretrained/shapes_R18.pth"
