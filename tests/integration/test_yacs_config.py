"""The yacs path (``mkd.add_mkd_config``): the student comes from its own yaml, as the teacher
does: its meta-architecture and its weights; a contradiction is refused."""
import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import GeneralizedRCNN, RetinaNet, build_model

from mkd import MKD, add_mkd_config

BOTTOM_UP = "backbone.bottom_up."


def small(cfg):
    """A model-zoo yacs config with an R18 bottom-up, BN, a 32-wide FPN and 3 classes, on CPU."""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    return cfg


def write_yaml(path, zoo_file, **model):
    cfg = small(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file(zoo_file))
    small(cfg)
    for key, value in model.items():
        setattr(cfg.MODEL, key, value)
    path.write_text(cfg.dump())
    return cfg


@pytest.fixture
def yamls(tmp_path):
    """A RetinaNet teacher and a Faster R-CNN student, as yaml files; the student's yaml names
    a bottom-up-only weight file (like ImageNet weights)."""
    write_yaml(tmp_path / "teacher.yaml", "COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    student_cfg = write_yaml(tmp_path / "student.yaml",
                             "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
    torch.manual_seed(3)
    weights = {k: v for k, v in build_model(student_cfg).state_dict().items()
               if k.startswith(BOTTOM_UP)}
    torch.save({"model": weights}, tmp_path / "imagenet.pth")
    student_cfg.MODEL.WEIGHTS = str(tmp_path / "imagenet.pth")
    (tmp_path / "student.yaml").write_text(student_cfg.dump())
    return tmp_path, weights


def mkd_cfg(tmp_path, base="student.yaml", **mkd):
    """cfg as a yacs user writes it: the student's yaml merged (data, solver), MKD on top."""
    cfg = add_mkd_config(get_cfg())
    cfg.merge_from_file(str(tmp_path / base))
    cfg.MODEL.META_ARCHITECTURE = "MKD"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.MKD.TEACHER_CONFIG = str(tmp_path / "teacher.yaml")
    cfg.MODEL.MKD.DECODER_WIDTH = 32
    cfg.MODEL.MKD.DECODER_HEADS = 4
    for key, value in mkd.items():
        setattr(cfg.MODEL.MKD, key, value)
    return cfg


def test_student_architecture_and_weights_come_from_its_yaml(yamls):
    tmp_path, weights = yamls
    model = build_model(mkd_cfg(tmp_path, STUDENT_CONFIG=str(tmp_path / "student.yaml")))
    assert isinstance(model, MKD)
    assert isinstance(model.student, GeneralizedRCNN)  # not the former default, RetinaNet
    assert isinstance(model.teacher, RetinaNet)
    assert model.levels == ["p3", "p4", "p5", "p6"]  # what Faster R-CNN and RetinaNet share
    state = model.student.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())

    # Naming the architecture the yaml has is allowed.
    model = build_model(mkd_cfg(tmp_path, STUDENT_CONFIG=str(tmp_path / "student.yaml"),
                                STUDENT_META_ARCHITECTURE="GeneralizedRCNN"))
    assert isinstance(model.student, GeneralizedRCNN)


def test_a_contradicting_student_architecture_is_refused(yamls):
    tmp_path, _ = yamls
    cfg = mkd_cfg(tmp_path, STUDENT_CONFIG=str(tmp_path / "student.yaml"),
                  STUDENT_META_ARCHITECTURE="RetinaNet")
    with pytest.raises(ValueError, match=r"STUDENT_META_ARCHITECTURE is 'RetinaNet', but the "
                                         r"student's yaml .*student\.yaml builds a "
                                         r"'GeneralizedRCNN'.*Clear STUDENT_META_ARCHITECTURE"):
        build_model(cfg)


def test_an_mkd_yaml_as_the_student_is_refused(yamls):
    tmp_path, _ = yamls
    cfg = mkd_cfg(tmp_path, STUDENT_CONFIG=str(tmp_path / "student.yaml"))
    (tmp_path / "mkd.yaml").write_text(cfg.dump())
    cfg.MODEL.MKD.STUDENT_CONFIG = str(tmp_path / "mkd.yaml")
    with pytest.raises(ValueError, match="the student must be a plain detector"):
        build_model(cfg)


def test_configs_without_a_student_yaml_keep_working(yamls):
    tmp_path, _ = yamls
    # Stated: built from cfg itself, without cfg's MODEL.WEIGHTS (those DefaultTrainer loads).
    cfg = mkd_cfg(tmp_path, STUDENT_META_ARCHITECTURE="GeneralizedRCNN")
    cfg.MODEL.WEIGHTS = str(tmp_path / "missing.pth")
    assert isinstance(build_model(cfg).student, GeneralizedRCNN)
    # Unstated: the former default, RetinaNet, with a warning that names the fix (here cfg is a
    # RetinaNet's, the teacher's yaml).
    cfg = mkd_cfg(tmp_path, base="teacher.yaml")
    with pytest.warns(FutureWarning, match="set STUDENT_CONFIG to the student's yaml"):
        model = build_model(cfg)
    assert isinstance(model.student, RetinaNet)


def test_the_masked_pass_and_decoder_options_reach_the_model(yamls):
    tmp_path, _ = yamls
    model = build_model(mkd_cfg(tmp_path, STUDENT_CONFIG=str(tmp_path / "student.yaml"),
                                MASKED_NORM_STATISTICS="batch", TOKEN_STRIDE=16,
                                RESIDUAL_ADAPTER=True, SAM_NORM=True,
                                STUDENT_GRADIENT_SCALE=3.0))
    assert model.masked_norm_statistics == "batch"
    assert model.distiller.student_gradient_scale == 3.0
    decoder = model.distiller.decoder
    assert decoder.token_stride == 16 and set(decoder.residual) == set(model.levels)
    assert set(decoder.sam_norm) == set(model.levels)
    defaults = build_model(mkd_cfg(tmp_path, STUDENT_CONFIG=str(tmp_path / "student.yaml")))
    assert defaults.masked_norm_statistics == "visible"
    assert defaults.distiller.decoder.token_stride == 32
    assert defaults.distiller.decoder.residual is None
    assert defaults.distiller.decoder.sam_norm is None
    assert defaults.distiller.student_gradient_scale == 1.0
