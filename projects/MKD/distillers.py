"""Distillers: how student features connect to the teacher's, and which losses compare them.

The meta-architecture records the features and calls a distiller; a distiller only connects
(decoder, adapters) and scores (losses). MKD, feature mimicking, FGD and MGD are distillers of
this one interface, so they are configs of the same machinery.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import Instances
from torch import nn

from .decoder import MKDDecoder
from .losses import FeatureLoss, GlobalLoss
from .masking import PatchMask

__all__ = ["DistillContext", "FeatureDistiller", "MKDDistiller"]


@dataclass
class DistillContext:
    """What a distiller may need besides the features of the distilled levels."""

    image_size: tuple  # (H, W) of the padded batch
    mask: Optional[PatchMask] = None  # the student's patch mask (masked distillers)
    gt_instances: Optional[List[Instances]] = None  # ground truth (FGD's fore/background)


class FeatureDistiller(nn.Module):
    """Base class. ``build`` creates the shape-dependent layers once the meta-architecture knows
    the distilled levels; ``forward`` returns a dict of weighted ``loss_*`` terms."""

    #: True when the student must see a masked image (the meta-architecture then draws masks).
    masks_student_input = False
    #: True when student and teacher channels may differ (the distiller has an adapter).
    adapts_channels = False
    #: True when the distiller reads ``context.gt_instances`` (only then are they gathered).
    uses_ground_truth = False

    def build(self, student_shapes: Dict[str, ShapeSpec], teacher_shapes: Dict[str, ShapeSpec]):
        if not self.adapts_channels:
            for level, shape in student_shapes.items():
                if shape.channels != teacher_shapes[level].channels:
                    raise ValueError(
                        f"{type(self).__name__}: channel mismatch at level {level}: student "
                        f"{shape.channels}, teacher {teacher_shapes[level].channels}. Give the "
                        "distiller an adapter, or make the FPNs' out_channels equal."
                    )
        return self

    def forward(
        self,
        student: Dict[str, torch.Tensor],
        teacher: Dict[str, torch.Tensor],
        context: DistillContext,
    ) -> Dict[str, torch.Tensor]:
        raise NotImplementedError


class MKDDistiller(FeatureDistiller):
    """``lambda * L_feat(T, decoder(S_masked)) + gamma * L_global(T, decoder(S_masked))``."""

    masks_student_input = True
    adapts_channels = True

    def __init__(
        self,
        *,
        decoder: MKDDecoder,
        feature_loss: FeatureLoss,
        global_loss: Optional[GlobalLoss] = None,
        feature_weight: float = 1.0,
        global_weight: float = 1.0,
    ):
        super().__init__()
        if feature_weight < 0 or global_weight < 0:
            raise ValueError(
                f"loss weights must be >= 0, got feature_weight={feature_weight}, "
                f"global_weight={global_weight}"
            )
        self.decoder = decoder
        self.feature_loss = feature_loss
        self.global_loss = global_loss
        self.feature_weight = feature_weight
        self.global_weight = global_weight

    def build(self, student_shapes, teacher_shapes):
        super().build(student_shapes, teacher_shapes)
        self.strides = {level: shape.stride for level, shape in student_shapes.items()}
        self.decoder.build(student_shapes, teacher_shapes)
        if self.global_loss is not None:
            self.global_loss.build({k: v.channels for k, v in teacher_shapes.items()})
        return self

    def forward(self, student, teacher, context):
        if context.mask is None:
            raise ValueError("MKDDistiller needs the student's patch mask (a masker)")
        reconstructed = self.decoder(student, context.mask)
        hidden = None
        if self.feature_loss.positions == "hidden":
            hidden = {k: 1 - context.mask.at_feature(v, self.strides[k])
                      for k, v in reconstructed.items()}
        losses = {
            "loss_mkd_feat": self.feature_weight
            * self.feature_loss(reconstructed, teacher, hidden)
        }
        if self.global_loss is not None:
            global_loss = self.global_loss(reconstructed, teacher)
            losses["loss_mkd_global"] = self.global_weight * global_loss
        return losses
