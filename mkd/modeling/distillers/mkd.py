"""MKD's distiller: the student's masked features through the adaptive decoder, scored against
the teacher's full features by the normalised feature loss and the GcBlock global loss."""
from typing import Optional

from ..decoder import MKDDecoder
from ..losses import FeatureLoss, GlobalLoss, spatial_correlation
from .base import FeatureDistiller, scale_gradient

__all__ = ["MKDDistiller"]


class MKDDistiller(FeatureDistiller):
    """``lambda * L_feat(T, decoder(S_masked)) + gamma * L_global(T, decoder(S_masked))``.

    Logs (``log_period``) each loss per level and ``distill/<level>/r``: how well the decoder
    reconstructs the teacher (``spatial_correlation``: 1 exact, 0 unrelated), for levels whose
    maps have more than one position.

    ``student_gradient_scale`` multiplies the gradient the decoder sends back into the student
    (the losses and the decoder's own gradients are unchanged): how hard the student is pulled,
    apart from how fast the decoder learns, which the loss weights set together. 1 is the
    paper's; other values are this project's variant.

    ``forward`` is ``reconstruct``, then ``level_terms``, weighed and summed: public steps, so
    that what measures MKD (time per piece, reconstruction error, per-level weighting) runs
    the code training runs rather than a copy of it."""

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

    def reconstruct(self, student, mask):
        """The decoder's reconstruction of the teacher's features at every level, from the
        student's masked features; the gradient it sends back into the student is scaled by
        ``student_gradient_scale``."""
        student = {k: scale_gradient(v, self.student_gradient_scale) for k, v in student.items()}
        return self.decoder(student, mask)

    def hidden_positions(self, features, mask):
        """Per level, (N, 1, H, W): the hidden share of each position's pixels (1 where its
        patch was hidden, a fraction where a coarse position spans several patches), the weights
        of ``FeatureLoss(positions="hidden")``. ``features``: maps of the batch ``mask`` was
        applied to."""
        return {k: 1 - mask.at_feature(v, self.strides[k]) for k, v in features.items()}

    def level_terms(self, reconstructed, teacher, mask):
        """``{loss name: (weight, {level: term})}`` of ``reconstructed`` (``reconstruct``'s
        output) against the teacher's features: what ``forward`` weighs, sums and logs."""
        hidden = None
        if self.feature_loss.positions == "hidden":
            hidden = self.hidden_positions(reconstructed, mask)
        terms = {"loss_mkd_feat": (self.feature_weight,
                                   self.feature_loss.level_terms(reconstructed, teacher, hidden))}
        if self.global_loss is not None:
            terms["loss_mkd_global"] = (self.global_weight,
                                        self.global_loss.level_terms(reconstructed, teacher))
        return terms

    def forward(self, student, teacher, context):
        if context.mask is None:
            raise ValueError("MKDDistiller needs the student's patch mask (a masker)")
        reconstructed = self.reconstruct(student, context.mask)
        terms = self.level_terms(reconstructed, teacher, context.mask)
        return self.weighted_losses(terms, extra=lambda: {"r": {
            k: spatial_correlation(x, teacher[k])
            for k, x in reconstructed.items() if x.shape[-2:].numel() > 1}})
