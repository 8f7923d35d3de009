"""Faster R-CNN R50-FPN from scratch on the built-in dataset (CPU): Mask R-CNN without masks."""
from .mask_rcnn_R50_scratch import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.mapper.use_instance_mask = False
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
train.output_dir = "./output/faster_rcnn_R50_scratch"
