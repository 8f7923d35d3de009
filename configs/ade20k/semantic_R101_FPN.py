"""The ADE20K teacher: semantic FPN R101 from torchvision's ImageNet ResNet-101, 160k iterations
at batch 16 with a poly learning rate, 512x512 crops (the usual ADE20K schedule). See
configs/cityscapes/semantic_R101_FPN.py for the weights and the shared input normalisation."""
from ..cityscapes.semantic_R101_FPN import lr_multiplier, model, optimizer, train
from ..common.data.ade20k_sem_seg import dataloader

model.sem_seg_head.num_classes = 150
dataloader.train.mapper.image_format = "RGB"
dataloader.test.mapper.image_format = "RGB"
lr_multiplier.warmup_length = 1000 / 160000

train.max_iter = 160000
train.eval_period = 16000
train.checkpointer.period = 16000
train.output_dir = "./output/ade20k/semantic_R101_FPN"
