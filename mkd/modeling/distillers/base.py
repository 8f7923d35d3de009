"""The distiller interface: how student features connect to the teacher's, and which losses
compare them.

The meta-architecture records the features and calls a distiller; a distiller only connects
(decoder, adapters) and scores (losses). MKD, feature mimicking, FGD and MGD are distillers of
this one interface (one module each), so they are configs of the same machinery.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage, get_event_storage
from torch import nn

from ..masking import PatchMask

__all__ = ["AlignedDistiller", "DistillContext", "FeatureDistiller", "check_non_negative",
           "scale_gradient"]


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


def check_non_negative(**values: float):
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


class AlignedDistiller(FeatureDistiller):
    """Maps every student level to the teacher's channels with a 1x1 conv before scoring: FGD's
    and MGD's ``align`` (the identity when the channels already match)."""

    adapts_channels = True
    #: FitNets' regressor: a learnt adapter even when the channels match.
    always_adapt = False

    def build(self, student_shapes, teacher_shapes):
        super().build(student_shapes, teacher_shapes)
        self.align = nn.ModuleDict()
        for level, shape in student_shapes.items():
            teacher_channels = teacher_shapes[level].channels
            if self.always_adapt or shape.channels != teacher_channels:
                self.align[level] = nn.Conv2d(shape.channels, teacher_channels, kernel_size=1)
            else:
                self.align[level] = nn.Identity()
        return self

    def aligned(self, student: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {level: self.align[level](x) for level, x in student.items()}
