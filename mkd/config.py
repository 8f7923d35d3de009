"""yacs support, for users of Detectron2's ``DefaultTrainer``/``build_model`` (LazyConfig users
need none of this: ``configs/common/mkd.py`` wires the same classes).

    cfg = get_cfg(); add_mkd_config(cfg); cfg.merge_from_file("student.yaml")  # data, solver
    cfg.MODEL.META_ARCHITECTURE = "MKD"
    cfg.MODEL.MKD.STUDENT_CONFIG = "student.yaml"  # the student's model and weights
    cfg.MODEL.MKD.TEACHER_CONFIG = "teacher.yaml"  # the teacher's model
    cfg.MODEL.MKD.TEACHER_WEIGHTS = "teacher.pkl"
    cfg.MODEL.WEIGHTS = ""  # DefaultTrainer would load it into the whole MKD model
    model = build_model(cfg)

The student is built from its own yaml, as the teacher is: its ``MODEL.META_ARCHITECTURE`` and
its ``MODEL.WEIGHTS`` (verified to cover its bottom-up network, e.g. ImageNet weights). Configs
without ``STUDENT_CONFIG`` build the student from ``cfg`` itself with
``STUDENT_META_ARCHITECTURE`` (a RetinaNet, with a warning, when that is unset too).
"""
import logging
import warnings

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from .modeling.decoder import MKDDecoder
from .modeling.distillers import MKDDistiller
from .modeling.losses import FeatureLoss, GlobalLoss
from .modeling.masking import PatchMasker

__all__ = ["add_mkd_config", "mkd_kwargs_from_yacs", "student_config"]

logger = logging.getLogger(__name__)

#: The student of configs that set neither STUDENT_CONFIG nor STUDENT_META_ARCHITECTURE.
LEGACY_STUDENT_META_ARCHITECTURE = "RetinaNet"


def add_mkd_config(cfg: CN) -> CN:
    """Adds ``cfg.MODEL.MKD`` with the defaults of ``configs/common/mkd.py``."""
    cfg.MODEL.MKD = CN()
    m = cfg.MODEL.MKD
    m.STUDENT_CONFIG = ""  # a yacs .yaml for the student model (its architecture and weights)
    # With STUDENT_CONFIG: empty, or what its MODEL.META_ARCHITECTURE must be. Without: the
    # student's meta-architecture, built from cfg itself (RetinaNet, with a warning, if empty).
    m.STUDENT_META_ARCHITECTURE = ""
    m.TEACHER_CONFIG = ""  # a yacs .yaml for the teacher model
    m.TEACHER_WEIGHTS = ""
    m.LEVELS = []  # empty: every level the two backbones share
    m.TASK_PASS = "clean"
    m.INIT_STUDENT_FROM_TEACHER = False
    m.MASKED_NORM_STATISTICS = "visible"  # BN in the masked pass: "visible", "clean" or "batch"
    m.PATCH_SIZE = 32
    m.MASK_RATIO = 0.5
    m.SEED = None  # None: drawn from the run's seed (cfg.SEED), saved with the checkpoint
    m.DECODER_WIDTH = 256
    m.DECODER_DEPTH = 2
    m.DECODER_HEADS = 8
    m.ONE_SEQUENCE = True
    m.TOKEN_STRIDE = 0  # 0: one decoder token per mask patch; a divisor of PATCH_SIZE: finer
    m.SAM_NORM = False  # a LayerNorm on the student's tokens after SAM
    m.RESIDUAL_ADAPTER = False  # this project's variant: a 1x1 path beside the decoder
    m.NORMALIZE = "channel"
    m.POSITIONS = "all"
    m.FEATURE_WEIGHT = 1.0
    m.GLOBAL_WEIGHT = 1.0  # 0 disables the global loss
    # This project's variant: the decoder's gradient into the student times this factor.
    m.STUDENT_GRADIENT_SCALE = 1.0
    m.GLOBAL_NORMALIZE = "image"
    m.GLOBAL_REDUCTION = "mean"
    return cfg


def student_config(cfg: CN) -> CN:
    """The student's yacs config: ``cfg.MODEL.MKD.STUDENT_CONFIG`` when set (its meta-architecture
    and weights are the student's), else ``cfg`` itself with ``STUDENT_META_ARCHITECTURE``.
    Refuses MKD as its own student, and a student yaml whose meta-architecture differs from an
    explicit ``STUDENT_META_ARCHITECTURE``."""
    m = cfg.MODEL.MKD
    if m.STUDENT_CONFIG:
        student_cfg = add_mkd_config(get_cfg())  # so an MKD yaml loads, and is refused below
        student_cfg.merge_from_file(m.STUDENT_CONFIG)
        student_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
        found = student_cfg.MODEL.META_ARCHITECTURE
        if m.STUDENT_META_ARCHITECTURE and m.STUDENT_META_ARCHITECTURE != found:
            raise ValueError(
                f"cfg.MODEL.MKD.STUDENT_META_ARCHITECTURE is {m.STUDENT_META_ARCHITECTURE!r}, but "
                f"the student's yaml {m.STUDENT_CONFIG} builds a {found!r} "
                "(its MODEL.META_ARCHITECTURE): the student would not be the model you named. "
                "Clear STUDENT_META_ARCHITECTURE (the yaml decides), or point STUDENT_CONFIG at a "
                f"{m.STUDENT_META_ARCHITECTURE} yaml."
            )
    else:
        architecture = m.STUDENT_META_ARCHITECTURE
        if not architecture:  # configs written before STUDENT_CONFIG relied on this default
            architecture = LEGACY_STUDENT_META_ARCHITECTURE
            message = (
                "cfg.MODEL.MKD.STUDENT_CONFIG and STUDENT_META_ARCHITECTURE are empty: building "
                f"the student as a {architecture} from this config, the former default. If the "
                "student is not a RetinaNet, this is the wrong model: set STUDENT_CONFIG to the "
                "student's yaml (its MODEL.META_ARCHITECTURE and MODEL.WEIGHTS are used), or "
                "STUDENT_META_ARCHITECTURE (e.g. 'GeneralizedRCNN'). The default will be removed."
            )
            warnings.warn(message, FutureWarning, stacklevel=2)
            logger.warning(message)
        student_cfg = cfg.clone()
        student_cfg.MODEL.META_ARCHITECTURE = architecture
        student_cfg.MODEL.WEIGHTS = ""  # cfg's own, which DefaultTrainer loads into MKD
    if student_cfg.MODEL.META_ARCHITECTURE == "MKD":
        raise ValueError(
            f"The student's meta-architecture is 'MKD' ({m.STUDENT_CONFIG or 'this config'}): "
            "the student must be a plain detector. Point STUDENT_CONFIG at the student's own "
            "yaml (e.g. a RetinaNet's), not at the MKD config."
        )
    return student_cfg


def mkd_kwargs_from_yacs(cfg: CN) -> dict:
    m = cfg.MODEL.MKD
    if not m.TEACHER_CONFIG:
        raise ValueError("cfg.MODEL.MKD.TEACHER_CONFIG is empty: point it at the teacher's .yaml")
    student_cfg = student_config(cfg)
    teacher_cfg = get_cfg()
    teacher_cfg.merge_from_file(m.TEACHER_CONFIG)
    teacher_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    logger.info(f"MKD student: {student_cfg.MODEL.META_ARCHITECTURE} from "
                f"{m.STUDENT_CONFIG or 'this config'}; teacher: "
                f"{teacher_cfg.MODEL.META_ARCHITECTURE} from {m.TEACHER_CONFIG}")
    return dict(
        student=build_model(student_cfg),
        teacher=build_model(teacher_cfg),
        distiller=MKDDistiller(
            decoder=MKDDecoder(width=m.DECODER_WIDTH, depth=m.DECODER_DEPTH,
                               num_heads=m.DECODER_HEADS, patch_size=m.PATCH_SIZE,
                               token_stride=m.TOKEN_STRIDE or None,
                               one_sequence=m.ONE_SEQUENCE, sam_norm=m.SAM_NORM,
                               residual_adapter=m.RESIDUAL_ADAPTER),
            feature_loss=FeatureLoss(normalize=m.NORMALIZE, positions=m.POSITIONS),
            global_loss=(GlobalLoss(normalize=m.GLOBAL_NORMALIZE, reduction=m.GLOBAL_REDUCTION)
                         if m.GLOBAL_WEIGHT > 0 else None),
            feature_weight=m.FEATURE_WEIGHT,
            global_weight=m.GLOBAL_WEIGHT,
            student_gradient_scale=m.STUDENT_GRADIENT_SCALE,
        ),
        masker=PatchMasker(patch_size=m.PATCH_SIZE, mask_ratio=m.MASK_RATIO, seed=m.SEED),
        levels=list(m.LEVELS) or None,
        teacher_weights=m.TEACHER_WEIGHTS or None,
        student_weights=student_cfg.MODEL.WEIGHTS or None,
        task_pass=m.TASK_PASS,
        init_student_from_teacher=m.INIT_STUDENT_FROM_TEACHER,
        masked_norm_statistics=m.MASKED_NORM_STATISTICS,
    )
