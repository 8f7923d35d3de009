"""Focal and Global Distillation (FGD, CVPR 2022) as a distiller of this package's interface:
the foreground/background and attention terms of its official loss, and GcBlock relations."""
from typing import List, Tuple

import torch
from detectron2.structures import Instances
from torch.nn import functional as F

from ..losses import GlobalLoss, computed_in_fp32
from .base import AlignedDistiller, check_non_negative

__all__ = ["FGDDistiller", "fgd_attention", "fgd_foreground_masks"]


def fgd_attention(features: torch.Tensor, temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """FGD's attention maps: spatial ``H W softmax(mean_c |F| / T)`` as (N, 1, H, W)
    and channel ``C softmax(mean_hw |F| / T)`` as (N, C, 1, 1); each averages to 1."""
    n, c, h, w = features.shape
    magnitude = features.abs()
    spatial = h * w * F.softmax(magnitude.mean(dim=1).flatten(1) / temperature, dim=1)
    channel = c * F.softmax(magnitude.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial.view(n, 1, h, w), channel.view(n, c, 1, 1)


def fgd_foreground_masks(
    gt_instances: List[Instances], feature_shape: Tuple[int, int], stride: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """FGD's binary and scale masks for one level, as (N, 1, H, W) each.

    Foreground: the cells a ground-truth box covers (``gt_boxes`` in pixels of the padded batch,
    divided by the level's stride), weighted by 1 / (the box's area in cells) so small objects
    count as much as large ones; the max where boxes overlap. Background: 1 / (number of
    background cells) on every cell no box covers, so it sums to 1 per image.

    Deliberate deviation: FGD's code scales boxes by the unpadded image size onto the padded
    map and also marks the row and column after ``ceil`` (one cell too many); the cells a box
    covers at the level's stride are the geometry the paper describes.
    """
    height, width = feature_shape
    foreground = []
    for instances in gt_instances:
        boxes = instances.gt_boxes.tensor / stride
        rows = torch.arange(height, device=boxes.device)
        cols = torch.arange(width, device=boxes.device)
        x0 = boxes[:, 0].floor().clamp(0, width - 1)
        y0 = boxes[:, 1].floor().clamp(0, height - 1)
        x1 = torch.maximum(boxes[:, 2].ceil(), x0 + 1).clamp(max=width)  # at least one cell
        y1 = torch.maximum(boxes[:, 3].ceil(), y0 + 1).clamp(max=height)
        inside_rows = (rows >= y0[:, None]) & (rows < y1[:, None])  # (K, H)
        inside_cols = (cols >= x0[:, None]) & (cols < x1[:, None])  # (K, W)
        inside = inside_rows[:, :, None] & inside_cols[:, None, :]  # (K, H, W)
        scale = inside / ((x1 - x0) * (y1 - y0))[:, None, None]
        foreground.append(scale.amax(dim=0) if len(boxes) else scale.new_zeros(height, width))
    foreground = torch.stack(foreground)[:, None]
    background = (foreground == 0).to(foreground.dtype)
    background = background / background.sum(dim=(2, 3), keepdim=True).clamp(min=1)
    return foreground, background


class FGDDistiller(AlignedDistiller):
    """Focal and Global Distillation (Yang et al., CVPR 2022), as its official mmdet loss.

    Focal feature loss: the squared error, weighted by the teacher's spatial and channel
    attention, summed separately over foreground (scale mask) and background positions.
    Attention loss: L1 between teacher and student attentions. Global loss: GcBlock relations
    on the raw features (``GlobalLoss(normalize="none", reduction="sum")``). Every
    term is summed over positions and channels, divided by the batch size, summed over levels.
    """

    uses_ground_truth = True

    def __init__(
        self,
        temperature: float = 0.5,
        alpha_fg: float = 1e-3,
        beta_bg: float = 5e-4,
        gamma_attention: float = 5e-4,
        lambda_global: float = 5e-6,
        log_period: int = 20,
    ):
        super().__init__(log_period)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        check_non_negative(alpha_fg=alpha_fg, beta_bg=beta_bg, gamma_attention=gamma_attention,
                            lambda_global=lambda_global)
        self.temperature = temperature
        self.alpha_fg = alpha_fg
        self.beta_bg = beta_bg
        self.gamma_attention = gamma_attention
        self.lambda_global = lambda_global
        self.global_loss = GlobalLoss(normalize="none", reduction="sum")

    def build(self, student_shapes, teacher_shapes):
        super().build(student_shapes, teacher_shapes)
        self.strides = {level: shape.stride for level, shape in teacher_shapes.items()}
        self.global_loss.build({level: shape.channels for level, shape in teacher_shapes.items()})
        return self

    def forward(self, student, teacher, context):
        gt = context.gt_instances
        batch = len(next(iter(teacher.values())))
        if gt is None or len(gt) != batch:
            raise ValueError("FGDDistiller needs the ground-truth boxes of every image "
                             "(context.gt_instances) for its foreground mask")
        student = self.aligned(student)
        fg, bg, attention = self._level_terms(student, teacher, gt)
        return self.weighted_losses({
            "loss_fgd_fg": (self.alpha_fg, fg),
            "loss_fgd_bg": (self.beta_bg, bg),
            "loss_fgd_attention": (self.gamma_attention, attention),
            "loss_fgd_global": (self.lambda_global, self.global_loss.level_terms(student, teacher)),
        })

    @computed_in_fp32
    def _level_terms(self, student, teacher, gt):
        """The foreground, background and attention terms, each as ``{level: term}``."""
        batch = len(gt)
        fg, bg, attention = {}, {}, {}
        for level, s in student.items():
            t = teacher[level]
            spatial_t, channel_t = fgd_attention(t, self.temperature)
            spatial_s, channel_s = fgd_attention(s, self.temperature)
            foreground, background = fgd_foreground_masks(gt, t.shape[-2:], self.strides[level])
            weighted = (s - t).pow(2) * spatial_t * channel_t
            fg[level] = (weighted * foreground.to(t.dtype)).sum() / batch
            bg[level] = (weighted * background.to(t.dtype)).sum() / batch
            attention[level] = (
                (spatial_s - spatial_t).abs().sum() + (channel_s - channel_t).abs().sum()
            ) / batch
        return fg, bg, attention
