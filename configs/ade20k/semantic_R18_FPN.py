"""The ADE20K student without distillation: semantic FPN R18 from torchvision's ImageNet
ResNet-18 (``./R-18.pkl``), on the teacher's data and schedule (semantic_R101_FPN.py)."""
from .semantic_R101_FPN import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone.bottom_up.stages.depth = 18
del model.backbone.bottom_up.stages.stride_in_1x1  # BasicBlock has no 1x1 conv

train.init_checkpoint = "./R-18.pkl"
train.output_dir = "./output/ade20k/semantic_R18_FPN"
