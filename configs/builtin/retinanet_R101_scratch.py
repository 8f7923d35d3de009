"""RetinaNet R101-FPN from scratch on the built-in dataset (CPU): a teacher for R50."""
from .retinanet_R50_scratch import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.output_dir = "./output/retinanet_R101_scratch"
