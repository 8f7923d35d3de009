"""Masked Generative Distillation (MGD, ECCV 2022) as a distiller of this package's interface:
random positions of the aligned student feature hidden, the teacher's regenerated."""
import torch
from torch import nn

from ..losses import computed_in_fp32
from .base import AlignedDistiller, check_non_negative

__all__ = ["MGDDistiller", "mgd_keep_mask"]


def mgd_keep_mask(features: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """MGD's random feature mask, (N, 1, H, W): 0 at a ``mask_ratio`` fraction of positions
    (independently per image and position, from the global RNG), 1 elsewhere."""
    n, _, h, w = features.shape
    draw = torch.rand(n, 1, h, w, device=features.device)
    return (draw <= 1 - mask_ratio).to(features.dtype)


class MGDDistiller(AlignedDistiller):
    """Masked Generative Distillation (Yang et al., ECCV 2022): hide random positions of the
    aligned student feature, regenerate the teacher's full feature from the rest with
    conv3x3-ReLU-conv3x3, ``alpha * sum ||G(mask * S) - T||^2 / N`` summed over levels."""

    def __init__(self, alpha: float = 2e-5, mask_ratio: float = 0.65, log_period: int = 20):
        super().__init__(log_period)
        check_non_negative(alpha=alpha)
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
