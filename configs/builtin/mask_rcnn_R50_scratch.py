"""Mask R-CNN R50-FPN from scratch on the built-in dataset (CPU).

The model zoo's Mask R-CNN with BN in the backbone and GN in the FPN (FrozenBN assumes
ImageNet weights, which a from-scratch run does not have); data and schedule as the RetinaNet
configs.
"""
from detectron2 import model_zoo

from .retinanet_R50_scratch import dataloader, lr_multiplier, optimizer, train

dataloader.train.mapper.use_instance_mask = True

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages.norm = "BN"
model.backbone.bottom_up.freeze_at = 0
model.backbone.norm = "GN"
model.roi_heads.num_classes = 10
model.roi_heads.batch_size_per_image = 128
model.proposal_generator.post_nms_topk = (500, 200)

train.output_dir = "./output/mask_rcnn_R50_scratch"
