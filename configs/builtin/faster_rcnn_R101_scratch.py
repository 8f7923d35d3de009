"""Faster R-CNN R101-FPN from scratch on the built-in dataset (CPU): a teacher for R50."""
from .faster_rcnn_R50_scratch import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.output_dir = "./output/faster_rcnn_R101_scratch"
