"""Detectron2's semantic FPN: a ``SemanticSegmentor`` with the ``SemSegFPNHead`` of the model
zoo's panoptic FPN, i.e. that model without its instance branch (Kirillov et al., 2019).

The model zoo has it only as a yacs config (Misc/semantic_R_50_FPN_1x.yaml); this is its
LazyConfig, for MKD teachers and students of any ResNet depth. Set ``sem_seg_head.num_classes``
and ``sem_seg_head.ignore_value`` for the dataset.
"""
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling import SemanticSegmentor

_panoptic = model_zoo.get_config("common/models/panoptic_fpn.py").model

model = L(SemanticSegmentor)(
    backbone=_panoptic.backbone,  # ResNet-50 FPN, P2-P6
    sem_seg_head=_panoptic.sem_seg_head,  # P2-P5 upsampled to stride 4, summed, 1x1 classifier
    pixel_mean=_panoptic.pixel_mean,
    pixel_std=_panoptic.pixel_std,
)
# The yacs config's weight (SEM_SEG_HEAD.LOSS_WEIGHT: 1.0): panoptic FPN's 0.5 balances it
# against instance losses this model does not have.
model.sem_seg_head.loss_weight = 1.0
