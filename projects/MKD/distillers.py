"""Distillers: how student features connect to the teacher's, and which losses compare them.

The meta-architecture records the features and calls a distiller; a distiller only connects
(decoder, adapters) and scores (losses). MKD, feature mimicking, FGD and MGD are distillers of
this one interface, so they are configs of the same machinery.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage, get_event_storage
from torch import nn

from .decoder import MKDDecoder
from .losses import FeatureLoss, GlobalLoss, spatial_correlation
from .masking import PatchMask

__all__ = ["DistillContext", "FeatureDistiller", "MKDDistiller", "scale_gradient"]


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, its gradient times ``scale`` on the way back."""
    return x if scale == 1.0 else _ScaleGradient.apply(x, scale)


@dataclass
class DistillContext:
    """What a distiller may need besides the features of the distilled levels."""

    image_size: tuple  # (H, W) of the padded batch
    mask: Optional[PatchMask] = None  # the student's patch mask (masked distillers)
    gt_instances: Optional[List[Instances]] = None  # ground truth (FGD's fore/background)


class FeatureDistiller(nn.Module):
    """Base class. ``build`` creates the shape-dependent layers once the meta-architecture knows
    the distilled levels; ``forward`` returns a dict of weighted ``loss_*`` terms.

    Every ``log_period`` iterations (0: never) a distiller also writes each loss's per-level
    terms, weighted as in training, to Detectron2's event storage as ``distill/<level>/<loss>``
    (TensorBoard and metrics.json show them), so a run shows which level its distillation
    weighs; what only logging needs is computed on those iterations only, without gradients.
    """

    #: True when the student must see a masked image (the meta-architecture then draws masks).
    masks_student_input = False
    #: True when student and teacher channels may differ (the distiller has an adapter).
    adapts_channels = False
    #: True when the distiller reads ``context.gt_instances`` (only then are they gathered).
    uses_ground_truth = False

    def __init__(self, log_period: int = 20):
        super().__init__()
        if log_period < 0:
            raise ValueError(f"log_period must be >= 0 (0: no per-level logging), got "
                             f"{log_period}")
        self.log_period = log_period

    def logging_storage(self) -> Optional[EventStorage]:
        """The event storage when this iteration logs per-level values, else None (also outside
        a trainer, where Detectron2 has no storage: a distiller called on its own logs nothing)."""
        if not self.log_period:
            return None
        try:
            storage = get_event_storage()
        except AssertionError:  # Detectron2's way of saying no EventStorage is open
            return None
        return storage if storage.iter % self.log_period == 0 else None

    def weighted_losses(
        self,
        terms: Dict[str, Tuple[float, Dict[str, torch.Tensor]]],
        extra: Optional[Callable[[], Dict[str, Dict[str, torch.Tensor]]]] = None,
    ) -> Dict[str, torch.Tensor]:
        """``{name: (weight, {level: term})}`` as the loss dict ``{name: weight * sum of the
        terms}`` (summed, then weighted: the numbers the losses gave before they were logged).
        On a logging iteration it also logs the weighted terms, and ``extra()``'s
        ``{name: {level: value}}``, as ``distill/<level>/<name>``; unsmoothed, so each value is
        written at the iteration it was measured (Detectron2's writers take the latest)."""
        storage = self.logging_storage()
        if storage is not None:
            with torch.no_grad():
                logged = {name: {k: weight * v for k, v in per_level.items()}
                          for name, (weight, per_level) in terms.items()}
                logged.update(extra() if extra is not None else {})
            for name, per_level in logged.items():
                for level, value in per_level.items():
                    storage.put_scalar(f"distill/{level}/{name}", float(value),
                                       smoothing_hint=False)
        return {name: weight * sum(per_level.values())
                for name, (weight, per_level) in terms.items()}

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
    """``lambda * L_feat(T, decoder(S_masked)) + gamma * L_global(T, decoder(S_masked))``.

    Logs (``log_period``) each loss per level and ``distill/<level>/r``: how well the decoder
    reconstructs the teacher (``spatial_correlation``: 1 exact, 0 unrelated), for levels whose
    maps have more than one position.

    ``student_gradient_scale`` multiplies the gradient the decoder sends back into the student
    (the losses and the decoder's own gradients are unchanged): how hard the student is pulled,
    apart from how fast the decoder learns, which the loss weights set together. 1 is the
    paper's; other values are this project's variant."""

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
        student_gradient_scale: float = 1.0,
        log_period: int = 20,
    ):
        super().__init__(log_period)
        if feature_weight < 0 or global_weight < 0:
            raise ValueError(
                f"loss weights must be >= 0, got feature_weight={feature_weight}, "
                f"global_weight={global_weight}"
            )
        if student_gradient_scale < 0:
            raise ValueError(f"student_gradient_scale={student_gradient_scale} must be >= 0 (1 "
                             "leaves the gradient into the student unchanged)")
        self.student_gradient_scale = student_gradient_scale
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
        student = {k: scale_gradient(v, self.student_gradient_scale) for k, v in student.items()}
        reconstructed = self.decoder(student, context.mask)
        hidden = None
        if self.feature_loss.positions == "hidden":
            hidden = {k: 1 - context.mask.at_feature(v, self.strides[k])
                      for k, v in reconstructed.items()}
        terms = {"loss_mkd_feat": (self.feature_weight,
                                   self.feature_loss.level_terms(reconstructed, teacher, hidden))}
        if self.global_loss is not None:
            terms["loss_mkd_global"] = (self.global_weight,
                                        self.global_loss.level_terms(reconstructed, teacher))
        return self.weighted_losses(terms, extra=lambda: {"r": {
            k: spatial_correlation(x, teacher[k])
            for k, x in reconstructed.items() if x.shape[-2:].numel() > 1}})
