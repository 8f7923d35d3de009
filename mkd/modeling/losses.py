"""Losses that compare teacher and student FPN features: reusable by every distiller."""
import functools
from typing import Dict, Iterable, Optional

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "normalize_features", "computed_in_fp32", "spatial_correlation", "FeatureLoss",
    "GcBlock", "GlobalLoss",
]

NORMALIZATIONS = ("channel", "layernorm", "image", "none")


def normalize_features(x: torch.Tensor, mode: str = "channel", eps: float = 1e-6) -> torch.Tensor:
    """Affine-free normalisation so that teacher and student compare on one scale.

    ``channel``: standardise each channel over H x W, per image. ``layernorm``: standardise
    each position over C. ``image``: standardise each image's map over C x H x W with one mean
    and one std (relative channel and spatial magnitudes survive). ``none``: identity.
    """
    if mode in ("channel", "image"):
        dims = (2, 3) if mode == "channel" else (1, 2, 3)
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + eps)
    if mode == "layernorm":
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], eps=eps).permute(0, 3, 1, 2)
    if mode == "none":
        return x
    raise ValueError(f"Unknown normalization {mode!r}; choose one of {NORMALIZATIONS}")


def _to_fp32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    if isinstance(value, dict):
        return {k: _to_fp32(v) for k, v in value.items()}
    return value


def computed_in_fp32(forward):
    """Runs a loss's ``forward`` in fp32 with autocast off, whatever precision AMP gives the
    networks: a sum of squares over a feature map overflows fp16 (max 65504), and bf16 keeps
    only 8 significant bits. Tensor arguments, and dicts of them, arrive as fp32; the first
    argument is a dict of feature maps."""

    @functools.wraps(forward)
    def wrapper(self, features, *args, **kwargs):
        device = next(iter(features.values())).device
        features, args = _to_fp32(features), [_to_fp32(a) for a in args]
        kwargs = {k: _to_fp32(v) for k, v in kwargs.items()}
        with torch.autocast(device.type, enabled=False):
            return forward(self, features, *args, **kwargs)

    return wrapper


def spatial_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson's correlation over H x W of each channel of ``x`` with the same channel of ``y``
    (N, C, H, W each), averaged over channels and images: 1 when ``x`` reproduces ``y`` up to a
    positive scale and shift per channel, near 0 when unrelated. It reads a reconstruction as the
    channel-standardised feature loss does (its per-position error is ``2 - 2 r``), without the
    loss's eps. A channel constant over the map has no correlation and counts as 0."""
    x, y = x.float(), y.float()
    x = x - x.mean(dim=(2, 3), keepdim=True)
    y = y - y.mean(dim=(2, 3), keepdim=True)
    covariance = (x * y).mean(dim=(2, 3))
    scale = (x.pow(2).mean(dim=(2, 3)) * y.pow(2).mean(dim=(2, 3))).sqrt()
    return (covariance / scale.clamp(min=1e-12)).mean()


def _check_choice(name: str, value: str, choices: Iterable[str]):
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


class FeatureLoss(nn.Module):
    """``sum_i 1/(2 N_i) * ||T_i - S_i||^2`` over levels, averaged over images.

    ``positions="hidden"`` restricts the sum (and ``N_i``) to positions whose patch was hidden
    from the student: the MAE habit, an ablation of MKD's all-position default.
    """

    def __init__(self, normalize: str = "channel", positions: str = "all"):
        super().__init__()
        _check_choice("normalize", normalize, NORMALIZATIONS)
        _check_choice("positions", positions, ("all", "hidden"))
        self.normalize = normalize
        self.positions = positions

    def forward(
        self,
        student: Dict[str, torch.Tensor],
        teacher: Dict[str, torch.Tensor],
        hidden: Optional[Dict[str, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """``hidden[level]``: (N, 1, H, W), the hidden share of each position's pixels (1 where
        its patch was hidden; a fraction where a coarse position spans several patches)."""
        return sum(self.level_terms(student, teacher, hidden).values())

    @computed_in_fp32
    def level_terms(
        self,
        student: Dict[str, torch.Tensor],
        teacher: Dict[str, torch.Tensor],
        hidden: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Dict[str, torch.Tensor]:
        """The loss's term of each level (``forward`` is their sum), for logging per level."""
        if self.positions == "hidden" and hidden is None:
            raise ValueError("FeatureLoss(positions='hidden') needs the student's patch mask")
        terms = {}
        for level, s in student.items():
            t = teacher[level]
            sq = (normalize_features(s, self.normalize) - normalize_features(t, self.normalize))
            sq = sq.pow(2)
            if self.positions == "hidden":
                weight = hidden[level].to(sq.dtype)
                count = (weight.sum() * s.shape[1]).clamp(min=1.0)
                terms[level] = (sq * weight).sum() / (2 * count)
            else:
                terms[level] = sq.mean() / 2
        return terms


class GcBlock(nn.Module):
    """FGD's global-context block ``R(F) = F + transform(context(F))`` (GCNet).

    The last conv starts at zero so ``R`` starts as the identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 2, 1)
        self.context = nn.Conv2d(channels, 1, kernel_size=1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.context.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        attention = self.context(x).view(n, 1, h * w).softmax(dim=-1)  # (N, 1, HW)
        context = torch.bmm(x.view(n, c, h * w), attention.transpose(1, 2)).view(n, c, 1, 1)
        return x + self.transform(context)


class GlobalLoss(nn.Module):
    """FGD's global loss ``sum_i ||R_T(T_i) - R_S(S_i)||^2`` with separate, learnable GcBlocks
    for the teacher and student sides of every level.

    ``normalize="image"`` (MKD's default) standardises each image's map with one mean and one
    std before the GcBlocks: the loss no longer follows the teacher's feature magnitude (on raw
    features it grows with its square), yet the map keeps its relative channel and spatial
    magnitudes, which the GcBlock's attention and context read. ``"none"`` is FGD's (raw
    features). ``"layernorm"`` (each position over C) is scale-free too but erases where the
    features are strong. Per-channel standardisation is refused: a GcBlock adds one value per
    channel, standardised maps have zero mean per channel, so its transform would get no
    gradient and the loss would stay equal to ``FeatureLoss``.

    ``reduction="sum"`` is FGD's (summed, divided by the batch size; its weights are tiny);
    ``"mean"`` divides by ``2 C H W`` like ``FeatureLoss`` so that weights do not depend on the
    image size.
    """

    def __init__(self, normalize: str = "image", reduction: str = "mean"):
        super().__init__()
        _check_choice("normalize", normalize, ("image", "layernorm", "none"))
        _check_choice("reduction", reduction, ("mean", "sum"))
        self.normalize = normalize
        self.reduction = reduction
        self.student_blocks = nn.ModuleDict()
        self.teacher_blocks = nn.ModuleDict()

    def build(self, channels: Dict[str, int]):
        """Creates one GcBlock pair per level, ``channels[level]`` wide."""
        for level, c in channels.items():
            self.student_blocks[level] = GcBlock(c)
            self.teacher_blocks[level] = GcBlock(c)
        return self

    def forward(self, student: Dict[str, torch.Tensor], teacher: Dict[str, torch.Tensor]):
        return sum(self.level_terms(student, teacher).values())

    @computed_in_fp32
    def level_terms(self, student: Dict[str, torch.Tensor], teacher: Dict[str, torch.Tensor]):
        """The loss's term of each level (``forward`` is their sum), for logging per level."""
        terms = {}
        for level, s in student.items():
            s = self.student_blocks[level](normalize_features(s, self.normalize))
            t = self.teacher_blocks[level](normalize_features(teacher[level], self.normalize))
            sq = (s - t).pow(2)
            terms[level] = sq.mean() / 2 if self.reduction == "mean" else sq.sum() / len(sq)
        return terms
