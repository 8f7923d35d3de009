"""The teacher-student meta-architecture: a frozen teacher, a trainable Detectron2 student and a
distiller, trained through Detectron2's own trainer. Evaluation is the student alone."""
import contextlib
import logging
import zlib
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from .distillers import DistillContext, FeatureDistiller
from .masking import MaskedConvolutions, PatchMasker
from .weights import copy_matching_weights, load_verified_weights

__all__ = ["MKD", "image_key"]

logger = logging.getLogger(__name__)


class _BackboneRecorder:
    """Keeps the last input (the normalised, padded batch) and output (the FPN features) of a
    backbone while recording, so distillation reuses the task pass instead of redoing it."""

    def __init__(self, backbone: nn.Module):
        self.recording = False
        self.images: Optional[torch.Tensor] = None
        self.features: Optional[Dict[str, torch.Tensor]] = None
        backbone.register_forward_hook(self._record)

    @contextlib.contextmanager
    def record(self):
        self.recording, self.images, self.features = True, None, None
        try:
            yield
        finally:
            self.recording = False

    def take(self):
        """The recorded batch and features, released so they do not outlive the step."""
        images, features, self.images, self.features = self.images, self.features, None, None
        return images, features

    def _record(self, module, inputs, output):
        if self.recording:
            self.images, self.features = inputs[0], output


@contextlib.contextmanager
def _frozen_norm_statistics(module: nn.Module):
    """BatchNorm normalises with batch statistics but leaves its running statistics alone (the
    masked pass must not teach inference-time BN the statistics of half-hidden images)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


@META_ARCH_REGISTRY.register()
class MKD(nn.Module):
    """Masked Knowledge Distillation around any two Detectron2 FPN detectors.

    ``teacher`` and ``student`` are ordinary Detectron2 models (RetinaNet or GeneralizedRCNN).
    The teacher is frozen, always in eval mode, and kept out of this module's parameters,
    ``state_dict``, optimizer and DDP. With a distiller that does not mask the student (feature
    mimicking, FGD, MGD) this is plain feature distillation on the same machinery.
    """

    @configurable
    def __init__(
        self,
        *,
        student: nn.Module,
        teacher: nn.Module,
        distiller: FeatureDistiller,
        masker: Optional[PatchMasker] = None,
        levels: Optional[Sequence[str]] = None,
        teacher_weights: Optional[str] = None,
        student_weights: Optional[str] = None,
        task_pass: str = "clean",
        init_student_from_teacher: bool = False,
    ):
        """
        Args:
            distiller: connects and scores the features of ``levels``.
            masker: draws the student's patch masks; required iff the distiller masks.
            levels: FPN levels to distil (default: every level the two backbones share).
            teacher_weights: Detectron2 .pkl/.pth, loaded and verified now. ``None`` builds a
                teacher without weights (evaluation of the student needs none); training then
                refuses to start until ``load_teacher`` was called.
            student_weights: optional initial student weights, e.g. an ImageNet backbone .pkl;
                verified to cover the student's whole bottom-up network.
            task_pass: ``"clean"``: task losses from an unmasked pass, distillation from a
                masked one; ``"masked"``: one masked pass for both (cheaper).
            init_student_from_teacher: copy the teacher's neck and head into the student where
                names and shapes match.
        """
        super().__init__()
        if task_pass not in ("clean", "masked"):
            raise ValueError(f"task_pass must be 'clean' or 'masked', got {task_pass!r}")
        if distiller.masks_student_input and masker is None:
            raise ValueError(f"{type(distiller).__name__} masks the student: give MKD a masker")
        if not distiller.masks_student_input and masker is not None:
            raise ValueError(f"{type(distiller).__name__} does not mask the student: masker "
                             "must be None")
        self.student = student
        object.__setattr__(self, "teacher", teacher)  # not a submodule: see the class docstring
        teacher.requires_grad_(False)
        teacher.eval()
        self.masker = masker
        self.task_pass = task_pass
        self.levels = self._distilled_levels(levels)
        self.distiller = distiller.build(
            {k: student.backbone.output_shape()[k] for k in self.levels},
            {k: teacher.backbone.output_shape()[k] for k in self.levels},
        )
        self._recorder = _BackboneRecorder(student.backbone)
        self._teacher_shares_input = (
            teacher.backbone.size_divisibility == student.backbone.size_divisibility
            and torch.equal(teacher.pixel_mean.cpu(), student.pixel_mean.cpu())
            and torch.equal(teacher.pixel_std.cpu(), student.pixel_std.cpu())
        )
        self._masked_convs = MaskedConvolutions(student.backbone.bottom_up) if masker else None
        # Masks are a function of (seed, step, image): the step is saved with the checkpoint.
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.long))
        self.teacher_loaded = False
        if teacher_weights:
            self.load_teacher(teacher_weights)
        if student_weights:
            load_verified_weights(student, student_weights, "student", "backbone.bottom_up.")
        if init_student_from_teacher:
            copy_matching_weights(teacher, student, skip_prefix="backbone.bottom_up.")

    @classmethod
    def from_config(cls, cfg):
        from .config import mkd_kwargs_from_yacs

        return mkd_kwargs_from_yacs(cfg)

    def _distilled_levels(self, levels: Optional[Sequence[str]]) -> List[str]:
        s_shapes = self.student.backbone.output_shape()
        t_shapes = self.teacher.backbone.output_shape()
        shared = [k for k in s_shapes if k in t_shapes]
        if levels is None:
            levels = shared
            if not levels:
                raise ValueError(
                    f"Teacher levels {sorted(t_shapes)} and student levels {sorted(s_shapes)} "
                    "share none: MKD distils FPN levels present in both backbones"
                )
        unknown = [k for k in levels if k not in shared]
        if unknown:
            raise ValueError(
                f"Unknown distillation levels {unknown}: teacher and student share {shared}"
            )
        for k in levels:
            if s_shapes[k].stride != t_shapes[k].stride:
                raise ValueError(f"Level {k} has stride {s_shapes[k].stride} in the student but "
                                 f"{t_shapes[k].stride} in the teacher")
        for attr in ("input_format",):
            if getattr(self.student, attr, None) != getattr(self.teacher, attr, None):
                raise ValueError(f"Teacher and student must share {attr}: "
                                 f"{getattr(self.teacher, attr)} vs {getattr(self.student, attr)}")
        return list(levels)

    # -- the teacher lives outside nn.Module's bookkeeping; devices and modes still follow ----
    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def load_teacher(self, path: str):
        load_verified_weights(self.teacher, path, role="teacher")
        self.teacher_loaded = True

    @property
    def device(self):
        return self.student.device

    # -- forward ---------------------------------------------------------------------------
    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.student(batched_inputs)
        if not self.teacher_loaded:
            raise RuntimeError(
                "MKD is training with a teacher that has no weights: set model.teacher_weights "
                "(a Detectron2 .pkl/.pth of the teacher config) or call load_teacher(path)"
            )
        mask = self.draw_masks(batched_inputs) if self.masker is not None else None
        single_pass = self.task_pass == "masked" or mask is None
        with self._recorder.record(), self._masking(mask if single_pass else None):
            losses = self.student(batched_inputs)
        images, student_features = self._recorder.take()
        if not single_pass:
            with _frozen_norm_statistics(self.student.backbone):
                student_features = self.masked_student_features(images, mask)
        teacher_features = self.teacher_features(batched_inputs, images)
        for k in self.levels:
            if student_features[k].shape[-2:] != teacher_features[k].shape[-2:]:
                raise ValueError(
                    f"Level {k}: student features {tuple(student_features[k].shape[-2:])} vs "
                    f"teacher features {tuple(teacher_features[k].shape[-2:])}; give both "
                    "backbones the same size_divisibility"
                )
        context = DistillContext(
            image_size=tuple(images.shape[-2:]),
            mask=mask,
            gt_instances=[x["instances"].to(self.device) for x in batched_inputs
                          if "instances" in x] or None
            if self.distiller.uses_ground_truth else None,
        )
        losses.update(self.distiller(
            {k: student_features[k] for k in self.levels},
            {k: teacher_features[k] for k in self.levels},
            context,
        ))
        return losses

    def _masking(self, mask):
        return self._masked_convs.active(mask) if mask is not None else contextlib.nullcontext()

    def masked_student_features(self, images: torch.Tensor, mask) -> Dict[str, torch.Tensor]:
        """The student's FPN features of a normalised, padded batch with ``mask`` applied."""
        with self._masking(mask):
            return self.student.backbone(images)

    @torch.no_grad()
    def teacher_features(self, batched_inputs: List[Dict], student_images: torch.Tensor):
        """The teacher's FPN features of the batch the student saw (as ``student_images``)."""
        return self.teacher.backbone(self._teacher_images(batched_inputs, student_images))

    def draw_masks(self, batched_inputs):
        """This step's patch masks for the batch; advances the step."""
        keys = [image_key(x, i) for i, x in enumerate(batched_inputs)]
        sizes = [tuple(x["image"].shape[-2:]) for x in batched_inputs]
        mask = self.masker(sizes, keys, int(self.mask_step), device=self.device)
        self.mask_step += 1
        return mask

    def _teacher_images(self, batched_inputs, student_images: torch.Tensor) -> torch.Tensor:
        """The student's normalised batch when both normalise and pad alike, else the teacher's
        own preprocessing."""
        if self._teacher_shares_input:
            return student_images
        return self.teacher.preprocess_image(batched_inputs).tensor


def image_key(batched_input: Dict, index: int) -> int:
    """The integer a mask draw is keyed by: the dataset's image id (hashed if not an int), else
    the position in the batch."""
    image_id = batched_input.get("image_id", index)
    if isinstance(image_id, int):
        return image_id
    return zlib.crc32(str(image_id).encode())
