"""The teacher-student meta-architecture: a frozen teacher, a trainable Detectron2 student and a
distiller, trained through Detectron2's own trainer. Evaluation is the student alone."""
import contextlib
import logging
import math
import zlib
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ..weights import copy_matching_weights, load_verified_weights
from .distillers import DistillContext, FeatureDistiller
from .masking import NORM_STATISTICS, MaskedConvolutions, PatchMasker

__all__ = ["FeatureDistillation", "MKD", "image_key"]

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


class _TeacherInput:
    """How the teacher gets its normalised, padded batch in a training step.

    The batch's ``image`` is in the student's channel order. A teacher that orders channels,
    normalises and pads like the student reuses the student's normalised batch (free). Any other
    teacher gets the images in its own channel order and runs its own ``preprocess_image`` (a
    ViTDet teacher: RGB, ImageNet std, a 1024 square). A model without ``input_format`` (FCOS,
    SemanticSegmentor) reads the data loader's channel order, whatever it is.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module):
        t_format, s_format = (getattr(m, "input_format", None) for m in (teacher, student))
        self.flip_channels = None not in (t_format, s_format) and t_format != s_format
        if self.flip_channels and {t_format, s_format} != {"RGB", "BGR"}:
            raise ValueError(f"The teacher reads {t_format} images, the student {s_format}: MKD "
                             "converts only between RGB and BGR; give both the same input_format")
        if (t_format is None) != (s_format is None):
            logger.warning(
                "Only one of teacher (%s) and student (%s) declares an input_format: the teacher "
                "gets the batch's channels unchanged; make sure the data loader's image_format is "
                "%s", t_format, s_format, t_format or s_format)
        teacher_preprocessing = _preprocessing(teacher)
        self.reuses_student_batch = (not self.flip_channels and teacher_preprocessing is not None
                                     and teacher_preprocessing == _preprocessing(student))
        if not self.reuses_student_batch and not callable(
                getattr(teacher, "preprocess_image", None)):
            raise ValueError(
                f"The {type(teacher).__name__} teacher orders channels, normalises or pads unlike "
                f"the {type(student).__name__} student (or does not say how: pixel_mean, "
                "pixel_std, backbone.size_divisibility) and has no preprocess_image(batched_inputs)"
                " to build its own batch: give it one, or give both models the same pixel_mean, "
                "pixel_std, input_format and padding"
            )

    def images(self, teacher: nn.Module, batched_inputs: List[Dict],
               student_images: torch.Tensor) -> torch.Tensor:
        if self.reuses_student_batch:
            return student_images
        if self.flip_channels:
            batched_inputs = [dict(x, image=x["image"].flip(-3)) for x in batched_inputs]
        return teacher.preprocess_image(batched_inputs).tensor


def _preprocessing(model: nn.Module) -> Optional[tuple]:
    """What decides a model's normalised, padded batch besides channel order (pixel statistics,
    padding), or None when the model does not expose its pixel statistics."""
    mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
    if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)):
        return None
    backbone = model.backbone
    constraints = getattr(backbone, "padding_constraints", None) or {}  # Detectron2 > 0.6
    return (
        mean.detach().cpu().flatten().tolist(),
        std.detach().cpu().flatten().tolist(),
        getattr(backbone, "size_divisibility", 0),
        sorted((k, v) for k, v in constraints.items() if v),
    )


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
class FeatureDistillation(nn.Module):
    """Feature distillation around any two Detectron2 FPN models: Masked Knowledge Distillation
    with ``MKDDistiller``, or another distiller of the same interface.

    ``teacher`` and ``student`` are ordinary Detectron2 models with an FPN-style ``backbone``
    (RetinaNet, FCOS, GeneralizedRCNN with any ROI heads, SemanticSegmentor, ViTDet). The
    teacher is frozen, always in eval mode, and kept out of this module's parameters,
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
        freeze_norm_statistics: bool = False,
        masked_norm_statistics: str = "visible",
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
                names and shapes match; needs ``teacher_weights``, and warns if nothing matches.
            freeze_norm_statistics: with ``task_pass="masked"``, the masked pass leaves the
                student's BatchNorm running statistics alone (they would learn half-hidden
                images); estimate them on clean images before evaluation instead
                (``train.precise_bn`` of tools/train_net.py).
            masked_norm_statistics: how the student's BatchNorm normalises the masked pass:
                ``"visible"`` (SparK's sparse BN: statistics over visible positions only),
                ``"clean"`` (the clean task pass's batch statistics) or ``"batch"`` (every
                position, hidden ones included). See ``MaskedConvolutions``.
        """
        super().__init__()
        if task_pass not in ("clean", "masked"):
            raise ValueError(f"task_pass must be 'clean' or 'masked', got {task_pass!r}")
        if freeze_norm_statistics and task_pass != "masked":
            raise ValueError("freeze_norm_statistics is for task_pass='masked' (the clean pass "
                             "already keeps the masked pass out of BN statistics): set "
                             "task_pass='masked' or freeze_norm_statistics=False")
        if masked_norm_statistics not in NORM_STATISTICS:
            raise ValueError(f"masked_norm_statistics must be one of {NORM_STATISTICS}, got "
                             f"{masked_norm_statistics!r}")
        if masked_norm_statistics == "clean" and task_pass != "clean":
            raise ValueError("masked_norm_statistics='clean' borrows the clean task pass's BN "
                             "statistics, and task_pass='masked' has none: set "
                             "task_pass='clean' or masked_norm_statistics='visible'")
        if init_student_from_teacher and not teacher_weights:
            raise ValueError("init_student_from_teacher=True copies the teacher's neck and head "
                             "into the student, but the teacher has no weights: set "
                             "model.teacher_weights, or init_student_from_teacher=False")
        if distiller.masks_student_input and masker is None:
            raise ValueError(f"{type(distiller).__name__} masks the student: give the model a masker")
        if not distiller.masks_student_input and masker is not None:
            raise ValueError(f"{type(distiller).__name__} does not mask the student: masker "
                             "must be None")
        self.student = student
        object.__setattr__(self, "teacher", teacher)  # not a submodule: see the class docstring
        teacher.requires_grad_(False)
        teacher.eval()
        self.masker = masker
        self.masked_norm_statistics = masked_norm_statistics
        self.task_pass = task_pass
        self.freeze_norm_statistics = freeze_norm_statistics
        self.levels = self._distilled_levels(levels)
        self.distiller = distiller.build(
            {k: student.backbone.output_shape()[k] for k in self.levels},
            {k: teacher.backbone.output_shape()[k] for k in self.levels},
        )
        self._recorder = _BackboneRecorder(student.backbone)
        self._teacher_input = _TeacherInput(teacher, student)
        self._masked_convs = (MaskedConvolutions(student.backbone.bottom_up,
                                                 norm_statistics=masked_norm_statistics)
                              if masker else None)
        # Masks are a function of (seed, rank, step, image): seed and step are saved with the
        # checkpoint, so a resumed run draws the masks of an uninterrupted one.
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.long))
        if masker is not None:
            self.register_buffer("mask_seed", torch.tensor(masker.seed, dtype=torch.long))
        self.teacher_loaded = False
        if teacher_weights:
            self.load_teacher(teacher_weights)
        if student_weights:
            load_verified_weights(student, student_weights, "student", "backbone.bottom_up.")
        if init_student_from_teacher:
            copy_matching_weights(teacher, student, skip_prefix="backbone.bottom_up.")

    @classmethod
    def from_config(cls, cfg):
        from ..config import mkd_kwargs_from_yacs

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
                    "share none: MKD distils FPN levels present in both backbones. Give both "
                    "models an FPN-style backbone (Detectron2's FPN names its levels p2-p7, e.g. "
                    "model_zoo's common/models/retinanet.py), not a bare bottom-up network"
                )
        unknown = [k for k in levels if k not in shared]
        if unknown:
            raise ValueError(
                f"Unknown distillation levels {unknown}: teacher and student share {shared}"
            )
        misaligned = [k for k in levels if s_shapes[k].stride != t_shapes[k].stride]
        if misaligned:
            aligned = [k for k in levels if k not in misaligned]
            raise ValueError(
                "Levels of one name must see the image at one stride, but "
                + ", ".join(f"{k} has stride {s_shapes[k].stride} in the student and "
                            f"{t_shapes[k].stride} in the teacher" for k in misaligned)
                + f". Set model.levels to levels whose strides agree ({aligned or 'none'}), or "
                "give both backbones the same stride per level"
            )
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
        freeze = self.freeze_norm_statistics and mask is not None
        with self._recorder.record(), self._masking(mask if single_pass else None), (
                _frozen_norm_statistics(self.student) if freeze else contextlib.nullcontext()):
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
                    f"teacher features {tuple(teacher_features[k].shape[-2:])} for a padded "
                    f"batch of {tuple(images.shape[-2:])}: MKD expects the student's maps to be "
                    "ceil(size / stride), as Detectron2's FPNs give; give the student such a "
                    "backbone"
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
        """The student's FPN features of a normalised, padded batch with ``mask`` applied, in
        the backbone's current mode."""
        with self._masking(mask):
            return self.student.backbone(images)

    def masked_student_features_as_trained(self, images: torch.Tensor, mask):
        """The masked pass as a training step runs it, whatever the model's mode: BN on batch
        statistics (``masked_norm_statistics``; after a clean pass, whose statistics "clean"
        borrows), running statistics untouched. Measurements of the decoder need this: in eval
        mode BN would use running statistics, on inputs training never gave the decoder."""
        backbone = self.student.backbone
        was_training = backbone.training
        backbone.train()
        try:
            with _frozen_norm_statistics(backbone):
                if self.masked_norm_statistics == "clean":
                    backbone(images)
                return self.masked_student_features(images, mask)
        finally:
            backbone.train(was_training)

    @torch.no_grad()
    def teacher_features(self, batched_inputs: List[Dict], student_images: torch.Tensor):
        """The teacher's features at the distilled levels of the batch the student saw (as
        ``student_images``), cropped to the student's padded size: a teacher may pad more (a
        ViTDet pads to a 1024 square), and both pad at the bottom and right."""
        features = self.teacher.backbone(
            self._teacher_input.images(self.teacher, batched_inputs, student_images))
        strides = self.teacher.backbone.output_shape()
        height, width = student_images.shape[-2:]
        cropped = {}
        for k in self.levels:
            rows, cols = math.ceil(height / strides[k].stride), math.ceil(width / strides[k].stride)
            if features[k].shape[-2] < rows or features[k].shape[-1] < cols:
                raise ValueError(
                    f"Level {k}: the teacher's features {tuple(features[k].shape[-2:])} are "
                    f"smaller than the student's {(rows, cols)} (padded batch "
                    f"{(height, width)}): the teacher must pad at least as much as the student; "
                    "give the teacher a size_divisibility that is a multiple of the student's "
                    f"({getattr(self.student.backbone, 'size_divisibility', 0)}) or a square "
                    "padding at least the student's largest padded image"
                )
            cropped[k] = features[k][..., :rows, :cols]
        return cropped

    def draw_masks(self, batched_inputs):
        """This step's patch masks for the batch; advances the step. The seed is the saved
        one (``mask_seed``), which a resumed run restores with the checkpoint."""
        keys = [image_key(x, i) for i, x in enumerate(batched_inputs)]
        sizes = [tuple(x["image"].shape[-2:]) for x in batched_inputs]
        self.masker.seed = int(self.mask_seed)
        mask = self.masker(sizes, keys, int(self.mask_step), device=self.device)
        self.mask_step += 1
        return mask


def image_key(batched_input: Dict, index: int) -> int:
    """The integer a mask draw is keyed by: the dataset's image id (hashed if not an int), else
    its file name (Detectron2's Cityscapes and ADE20K dicts have no image id), else the position
    in the batch (the masker mixes in the rank, so ranks still differ)."""
    image_id = batched_input.get("image_id", batched_input.get("file_name", index))
    if isinstance(image_id, int):
        return image_id
    return zlib.crc32(str(image_id).encode())


@META_ARCH_REGISTRY.register()
class MKD(FeatureDistillation):
    """The same meta-architecture, named as saved LazyConfigs and yacs configs name it."""
