"""The student of the shapes proxy: RetinaNet R18-FPN at the short student schedule, its
bottom-up pretrained by classification on crops of the train split.

configs/builtin/retinanet_R18_scratch.py on the shapes dataset (8 classes, 128 px), starting
from ``output/pretrained/shapes_R18.pth`` (``python tools/pretrain_backbone.py --config-file
configs/shapes/student.py``, 5.5 min once, cached), as real users start from ImageNet. The
distillation configs of this directory import their student and schedule from here. Measured on
2 CPU cores, one thread per run (output/shapes_levers.md): 250 iterations, about 1 s/iter; seed 0
35.0 box AP (21.9 at 200 iterations, 46.4 at 300; from scratch 6.5 at 200).
"""
from ..builtin.retinanet_R18_scratch import (  # noqa: F401  a LazyConfig is its globals
    lr_multiplier,
    model,
    optimizer,
    train,
)
from ..common.data.shapes import dataloader  # noqa: F401

model.num_classes = 8
train.max_iter = 250
train.eval_period = 125
train.log_period = 20
train.checkpointer.period = 250
train.output_dir = "./output/shapes/student"
# The bottom-up pretrained on crops of the train split (tools/pretrain_backbone.py, which writes
# this link): the rest of the detector starts random, as from ImageNet weights.
train.init_checkpoint = "./output/pretrained/shapes_R18.pth"
