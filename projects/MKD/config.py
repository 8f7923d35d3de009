"""yacs support, for users of Detectron2's ``DefaultTrainer``/``build_model`` (LazyConfig users
need none of this: ``configs/common/mkd.py`` wires the same classes).

    cfg = get_cfg(); add_mkd_config(cfg); cfg.merge_from_file("student.yaml")
    cfg.MODEL.META_ARCHITECTURE = "MKD"; cfg.MODEL.MKD.TEACHER_CONFIG = "teacher.yaml"
    model = build_model(cfg)
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from .decoder import MKDDecoder
from .distillers import MKDDistiller
from .losses import FeatureLoss, GlobalLoss
from .masking import PatchMasker

__all__ = ["add_mkd_config", "mkd_kwargs_from_yacs"]


def add_mkd_config(cfg: CN) -> CN:
    """Adds ``cfg.MODEL.MKD`` with the defaults of ``configs/common/mkd.py``."""
    cfg.MODEL.MKD = CN()
    m = cfg.MODEL.MKD
    m.STUDENT_META_ARCHITECTURE = "RetinaNet"
    m.TEACHER_CONFIG = ""  # a yacs .yaml for the teacher model
    m.TEACHER_WEIGHTS = ""
    m.LEVELS = []  # empty: every level the two backbones share
    m.TASK_PASS = "clean"
    m.INIT_STUDENT_FROM_TEACHER = False
    m.PATCH_SIZE = 32
    m.MASK_RATIO = 0.5
    m.SEED = None  # None: drawn from the run's seed (cfg.SEED), saved with the checkpoint
    m.DECODER_WIDTH = 256
    m.DECODER_DEPTH = 2
    m.DECODER_HEADS = 8
    m.ONE_SEQUENCE = True
    m.NORMALIZE = "channel"
    m.POSITIONS = "all"
    m.FEATURE_WEIGHT = 1.0
    m.GLOBAL_WEIGHT = 1.0  # 0 disables the global loss
    m.GLOBAL_NORMALIZE = "image"
    m.GLOBAL_REDUCTION = "mean"
    return cfg


def mkd_kwargs_from_yacs(cfg: CN) -> dict:
    m = cfg.MODEL.MKD
    if not m.TEACHER_CONFIG:
        raise ValueError("cfg.MODEL.MKD.TEACHER_CONFIG is empty: point it at the teacher's .yaml")
    student_cfg = cfg.clone()
    student_cfg.MODEL.META_ARCHITECTURE = m.STUDENT_META_ARCHITECTURE
    teacher_cfg = get_cfg()
    teacher_cfg.merge_from_file(m.TEACHER_CONFIG)
    teacher_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    return dict(
        student=build_model(student_cfg),
        teacher=build_model(teacher_cfg),
        distiller=MKDDistiller(
            decoder=MKDDecoder(width=m.DECODER_WIDTH, depth=m.DECODER_DEPTH,
                               num_heads=m.DECODER_HEADS, patch_size=m.PATCH_SIZE,
                               one_sequence=m.ONE_SEQUENCE),
            feature_loss=FeatureLoss(normalize=m.NORMALIZE, positions=m.POSITIONS),
            global_loss=(GlobalLoss(normalize=m.GLOBAL_NORMALIZE, reduction=m.GLOBAL_REDUCTION)
                         if m.GLOBAL_WEIGHT > 0 else None),
            feature_weight=m.FEATURE_WEIGHT,
            global_weight=m.GLOBAL_WEIGHT,
        ),
        masker=PatchMasker(patch_size=m.PATCH_SIZE, mask_ratio=m.MASK_RATIO, seed=m.SEED),
        levels=list(m.LEVELS) or None,
        teacher_weights=m.TEACHER_WEIGHTS or None,
        task_pass=m.TASK_PASS,
        init_student_from_teacher=m.INIT_STUDENT_FROM_TEACHER,
    )
