"""The Cityscapes teacher: semantic FPN R101 from ImageNet, 80k iterations at batch 8 with a
poly learning rate (the schedule behind MGD's Cityscapes numbers), 512x1024 crops.

The model zoo has no semantic FPN trained on Cityscapes, so the teacher is trained here. Teacher
and student both start from torchvision's ImageNet ResNets (convert them with Detectron2's
``tools/convert-torchvision-to-d2.py`` into ``./R-101.pkl`` and ``./R-18.pkl``): they then read
the same RGB, ImageNet-normalised batch, which MKD hands to both (a SemanticSegmentor declares
no input_format, so MKD could not convert channel orders between them).
"""
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from ..common.data.cityscapes_sem_seg import dataloader
from ..common.models.semantic_fpn import model

model.backbone.bottom_up.stages.depth = 101
model.backbone.bottom_up.stages.stride_in_1x1 = False  # torchvision strides in the 3x3 conv
model.sem_seg_head.num_classes = 19
model.sem_seg_head.ignore_value = 255
# What convert-torchvision-to-d2.py says its weights need (ImageNet statistics in RGB order).
model.pixel_mean = [123.675, 116.280, 103.530]
model.pixel_std = [58.395, 57.120, 57.375]
dataloader.train.mapper.image_format = "RGB"
dataloader.test.mapper.image_format = "RGB"

optimizer = model_zoo.get_config("common/optim.py").SGD
optimizer.lr = 0.01
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=0.9),
    warmup_length=1000 / 80000,
    warmup_factor=0.001,
)

train = model_zoo.get_config("common/train.py").train
train.max_iter = 80000
train.eval_period = 8000
train.checkpointer.period = 8000
train.init_checkpoint = "./R-101.pkl"
train.output_dir = "./output/cityscapes/semantic_R101_FPN"
