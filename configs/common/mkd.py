"""MKD's defaults, shared by every MKD config: set ``model.teacher`` and ``model.student`` to
ordinary Detectron2 model configs, ``model.teacher_weights``, and override what differs.

Spec defaults where the paper is silent (see docs/design_choices.md): mask ratio 0.5 on a
32-pixel patch grid, a 2-layer 256-wide decoder over one sequence of all levels, per-channel
standardisation before the feature loss's MSE (per-image before the global loss's), the loss on
all positions, and a clean pass for the task loss.
"""
from detectron2.config import LazyCall as L

from mkd import FeatureDistillation, FeatureLoss, GlobalLoss, MKDDecoder, MKDDistiller, PatchMasker

model = L(FeatureDistillation)(
    teacher=None,  # an ordinary Detectron2 model config, e.g. model_zoo's RetinaNet
    student=None,
    teacher_weights=None,  # Detectron2 .pkl/.pth of the teacher; verified when loaded
    student_weights=None,  # e.g. an ImageNet backbone .pkl
    levels=None,  # default: every FPN level teacher and student share
    task_pass="clean",  # "masked": a single masked pass for task and distillation losses
    init_student_from_teacher=False,
    # BN in the masked pass: statistics over visible positions only (SparK's sparse BN), so
    # hidden positions do not shift and rescale visible ones; "clean" or "batch" are the others.
    masked_norm_statistics="visible",
    # seed=None: the run's (from train.seed, random when it is < 0); an int pins it.
    masker=L(PatchMasker)(patch_size=32, mask_ratio=0.5, seed=None),
    distiller=L(MKDDistiller)(
        decoder=L(MKDDecoder)(
            width=256, depth=2, num_heads=8, patch_size="${...masker.patch_size}",
            token_stride=None,  # None: one token per mask patch; a divisor gives finer tokens
            one_sequence=True,
        ),
        feature_loss=L(FeatureLoss)(normalize="channel", positions="all"),
        # One mean and std per image's map: scale-free, and the GcBlock still learns
        # (per-channel standardisation would cancel it). FGD's is "none" (raw features).
        global_loss=L(GlobalLoss)(normalize="image", reduction="mean"),
        feature_weight=1.0,  # lambda
        global_weight=1.0,  # gamma
    ),
)
