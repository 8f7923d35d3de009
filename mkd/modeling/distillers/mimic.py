"""FitNets-style feature mimicking: a 1x1 adapter per level, then MKD's normalised feature
loss. It scores the student's clean task pass (masked mimicking is an option, for
experiments)."""
from ..losses import FeatureLoss
from .base import AlignedDistiller, check_non_negative

__all__ = ["MimicDistiller"]


class MimicDistiller(AlignedDistiller):
    """FitNets-style mimicking: ``weight * L_feat(T, adapter(S))`` with the normalised MSE of
    ``FeatureLoss`` and a 1x1 regressor on the student (FitNets' hint/guided-layer adapter).

    ``masked=True`` scores the student's masked pass instead (MKD's masking with a 1x1 adapter
    in place of its decoder; the model then needs a masker): it separates what masking does
    from what MKD's decoder does."""

    always_adapt = True

    def __init__(self, weight: float = 1.0, normalize: str = "channel", masked: bool = False,
                 log_period: int = 20):
        super().__init__(log_period)
        check_non_negative(weight=weight)
        self.weight = weight
        self.feature_loss = FeatureLoss(normalize=normalize)
        self.masks_student_input = masked

    def level_terms(self, student, teacher):
        """``{"loss_mimic": (weight, {level: term})}``: what ``forward`` sums (and the
        diagnosis weighs per level)."""
        return {"loss_mimic": (self.weight,
                               self.feature_loss.level_terms(self.aligned(student), teacher))}

    def forward(self, student, teacher, context):
        return self.weighted_losses(self.level_terms(student, teacher))
