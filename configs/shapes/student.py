"""The student of the shapes proxy: RetinaNet R18-FPN at the short student schedule, its
bottom-up pretrained by classification on crops of the train split.

configs/builtin/retinanet_R18_scratch.py on the shapes dataset (8 classes, 128 px), starting
from ``output/pretrained/shapes_R18.pth`` (``python tools/pretrain_backbone.py --config-file
configs/shapes/student.py``, 5.5 min once, cached), as real users start from ImageNet. The
distillation configs of this directory import their student and schedule from here: 300
iterations with a 100-iteration warm-up (the built-in configs' 25-iteration warm-up left one run
in five learning slowly from the start; docs/benchmark.md).
"""
from ..builtin.retinanet_R18_scratch import (  # noqa: F401  a LazyConfig is its globals
    lr_multiplier,
    model,
    optimizer,
    train,
)
from ..common.data.shapes import dataloader  # noqa: F401

model.num_classes = 8
train.max_iter = 300
train.eval_period = 150
train.log_period = 20
train.checkpointer.period = 300
# 100 iterations (the scheduler takes a fraction of max_iter). A longer warm-up removed the slow
# runs of the 25-iteration one; a longer schedule gets past the steep part of the learning curve,
# where a small delay costs many AP.
lr_multiplier.warmup_length = 100 / train.max_iter
train.output_dir = "./output/shapes/student"
# The bottom-up pretrained on crops of the train split (tools/pretrain_backbone.py, which writes
# this link): the rest of the detector starts random, as from ImageNet weights.
train.init_checkpoint = "./output/pretrained/shapes_R18.pth"
