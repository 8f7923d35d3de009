"""RetinaNet R50-FPN trained from scratch on the built-in digits dataset, on CPU.

Detectron2's model-zoo RetinaNet, edited so that it trains without ImageNet weights: FrozenBN
(meant for pre-trained backbones) diverges from scratch, BN in backbone and head and GN in the
FPN train stably at lr 0.01 with batch 8.
"""
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ..common.data.builtin import dataloader

model = model_zoo.get_config("common/models/retinanet.py").model
optimizer = model_zoo.get_config("common/optim.py").SGD
train = model_zoo.get_config("common/train.py").train

model.num_classes = 10
model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages.norm = "BN"
model.backbone.norm = "GN"
model.head.norm = "BN"
# FPN and head 128 wide, not 256: at 160 px the 256-wide head is about two thirds of an R18
# step on the CPU; at 128 the backbone, where teacher and student differ, carries the cost.
model.backbone.out_channels = 128
model.head.input_shape = [ShapeSpec(channels=128)] * 5
model.head.conv_dims = [128] * 4
# Anchors of 16-256 px, not 32-512, for 160-px inputs: on the train split every medium and large
# digit and a third of the small ones get an anchor at IoU >= 0.5 (with 32-512: no small one).
model.anchor_generator.sizes = [
    [x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)] for x in [16, 32, 64, 128, 256]
]

optimizer.lr = 0.01

# Milestones count iterations of the 300-iteration default; the scheduler only uses their ratio to
# the last one, so overriding train.max_iter stretches the whole schedule.
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[240, 280, 300]),
    warmup_length=30 / 300,
    warmup_method="linear",
    warmup_factor=0.001,
)

train.device = "cpu"
train.max_iter = 300
train.eval_period = 100
train.log_period = 20
train.checkpointer.period = 100
train.output_dir = "./output/retinanet_R50_scratch"
train.init_checkpoint = ""
