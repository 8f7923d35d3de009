"""The comparison distillers — FitNets-style feature mimicking, FGD and MGD — built from the
same parts as MKD: a per-level channel adapter, then losses from ``losses.py``.

All three score the student's clean task-pass features (``masks_student_input = False``; masked
mimicking is an option, for experiments). Each logs its loss terms per level every ``log_period``
iterations (``FeatureDistiller``).
"""
from typing import Dict, List, Tuple

import torch
from detectron2.structures import Instances
from torch import nn
from torch.nn import functional as F

from .distillers import FeatureDistiller
from .losses import FeatureLoss, GlobalLoss, computed_in_fp32

__all__ = [
    "MimicDistiller", "FGDDistiller", "MGDDistiller", "fgd_attention", "fgd_foreground_masks",
    "mgd_keep_mask",
]


def _check_non_negative(**values: float):
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


class _AlignedDistiller(FeatureDistiller):
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


class MimicDistiller(_AlignedDistiller):
    """FitNets-style mimicking: ``weight * L_feat(T, adapter(S))`` with the normalised MSE of
    ``FeatureLoss`` and a 1x1 regressor on the student (FitNets' hint/guided-layer adapter).

    ``masked=True`` scores the student's masked pass instead (MKD's masking with a 1x1 adapter
    in place of its decoder; the model then needs a masker): it separates what masking does
    from what MKD's decoder does."""

    always_adapt = True

    def __init__(self, weight: float = 1.0, normalize: str = "channel", masked: bool = False,
                 log_period: int = 20):
        super().__init__(log_period)
        _check_non_negative(weight=weight)
        self.weight = weight
        self.feature_loss = FeatureLoss(normalize=normalize)
        self.masks_student_input = masked

    def forward(self, student, teacher, context):
        terms = self.feature_loss.level_terms(self.aligned(student), teacher)
        return self.weighted_losses({"loss_mimic": (self.weight, terms)})


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


class FGDDistiller(_AlignedDistiller):
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
        _check_non_negative(alpha_fg=alpha_fg, beta_bg=beta_bg, gamma_attention=gamma_attention,
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


def mgd_keep_mask(features: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """MGD's random feature mask, (N, 1, H, W): 0 at a ``mask_ratio`` fraction of positions
    (independently per image and position, from the global RNG), 1 elsewhere."""
    n, _, h, w = features.shape
    draw = torch.rand(n, 1, h, w, device=features.device)
    return (draw <= 1 - mask_ratio).to(features.dtype)


class MGDDistiller(_AlignedDistiller):
    """Masked Generative Distillation (Yang et al., ECCV 2022): hide random positions of the
    aligned student feature, regenerate the teacher's full feature from the rest with
    conv3x3-ReLU-conv3x3, ``alpha * sum ||G(mask * S) - T||^2 / N`` summed over levels."""

    def __init__(self, alpha: float = 2e-5, mask_ratio: float = 0.65, log_period: int = 20):
        super().__init__(log_period)
        _check_non_negative(alpha=alpha)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.alpha = alpha
        self.mask_ratio = mask_ratio

    def build(self, student_shapes, teacher_shapes):
        super().build(student_shapes, teacher_shapes)
        self.generators = nn.ModuleDict({
            level: nn.Sequential(
                nn.Conv2d(shape.channels, shape.channels, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(shape.channels, shape.channels, kernel_size=3, padding=1),
            )
            for level, shape in teacher_shapes.items()
        })
        return self

    def forward(self, student, teacher, context):
        generated = {level: self.generators[level](s * mgd_keep_mask(s, self.mask_ratio))
                     for level, s in self.aligned(student).items()}
        terms = self._level_terms(generated, teacher)
        return self.weighted_losses({"loss_mgd": (self.alpha, terms)})

    @computed_in_fp32
    def _level_terms(self, generated, teacher):
        return {level: (g - teacher[level]).pow(2).sum() / len(g) for level, g in generated.items()}
