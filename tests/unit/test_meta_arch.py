import math

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.solver import get_default_optimizer_params
from detectron2.utils.events import EventStorage
from torch import nn

from mkd import MKD, FeatureDistillation, PatchMasker
from mkd.weights import student_state_dict
from tests import helpers
from tests.helpers import make_mkd, mkd_distiller, train_step

PAIRS = {
    "retinanet->retinanet": (("retinanet", 34, 32), ("retinanet", 18, 32),
                             ["p3", "p4", "p5", "p6", "p7"]),
    "mask_rcnn->mask_rcnn": (("mask_rcnn", 34, 32), ("mask_rcnn", 18, 32),
                             ["p2", "p3", "p4", "p5", "p6"]),
    "faster_rcnn->retinanet": (("faster_rcnn", 34, 32), ("retinanet", 18, 16),
                               ["p3", "p4", "p5", "p6"]),
    "retinanet->mask_rcnn": (("retinanet", 50, 32), ("mask_rcnn", 18, 32),
                             ["p3", "p4", "p5", "p6"]),
}


@pytest.mark.parametrize("pair", list(PAIRS))
def test_one_training_step_per_pair(tmp_path, pair):
    teacher, student, levels = PAIRS[pair]
    model = make_mkd(tmp_path, teacher, student)
    assert model.levels == levels
    losses = train_step(model)
    assert {"loss_mkd_feat", "loss_mkd_global"} <= set(losses)
    if "mask" in pair:
        assert "loss_mask" in losses
    assert all(math.isfinite(float(v)) for v in losses.values())
    assert losses["loss_mkd_feat"] > 0


def test_gradients_reach_student_and_decoder_never_teacher(tmp_path):
    model = make_mkd(tmp_path)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    optimizer = torch.optim.SGD(get_default_optimizer_params(model), lr=0.1)
    train_step(model)
    student = model.student.backbone
    assert student.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert student.fpn_output3.weight.grad.abs().sum() > 0
    decoder = model.distiller.decoder
    for p in (decoder.phi["p3"].weight, decoder.mask_tokens["p5"], decoder.srm["p6"].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    optimizer.step()
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_distillation_gradient_reaches_the_masked_student_backbone(tmp_path):
    model = make_mkd(tmp_path)
    model.train()
    with EventStorage(0):
        losses = model(helpers.batch())
    losses["loss_mkd_feat"].backward()
    assert model.student.backbone.bottom_up.res5[0].conv1.weight.grad.abs().sum() > 0
    assert model.student.head.cls_score.weight.grad is None  # the task head is not distilled


def test_teacher_is_frozen_in_eval_mode_and_outside_the_model(tmp_path):
    model = make_mkd(tmp_path)
    model.train()
    assert model.student.training and not model.teacher.training
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    params = [p for group in get_default_optimizer_params(model) for p in group["params"]]
    assert not teacher_ids & {id(p) for p in params}
    assert not any(k.startswith("teacher") for k in model.state_dict())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    model.double()  # devices and dtypes still follow the wrapper
    assert next(model.teacher.parameters()).dtype == torch.float64


def test_eval_is_the_student_alone(tmp_path):
    model = make_mkd(tmp_path).eval()
    calls = []
    model.teacher.backbone.register_forward_hook(lambda *a: calls.append("teacher"))
    model.distiller.register_forward_hook(lambda *a: calls.append("decoder"))
    inputs = helpers.batch()
    with torch.no_grad():
        ours = model(inputs)
        alone = model.student(inputs)
    assert calls == []
    for a, b in zip(ours, alone):
        assert torch.equal(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor)


def test_missing_and_partial_teacher_weights_raise(tmp_path):
    teacher, student = helpers.build("retinanet", 34, 32), helpers.build("retinanet", 18, 32)
    build = lambda path: MKD(student=student, teacher=teacher, distiller=mkd_distiller(),  # noqa
                             masker=PatchMasker(), teacher_weights=str(path))
    with pytest.raises(FileNotFoundError, match="teacher weights not found"):
        build(tmp_path / "nowhere.pth")
    state = teacher.state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("head.")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    missing = len(state) - len(partial)
    with pytest.raises(RuntimeError, match=f"{missing} of {len(state)} parameters/buffers missing"):
        build(tmp_path / "partial.pth")
    # An MKD training checkpoint is not a teacher checkpoint: nothing would load.
    torch.save({"model": {"student." + k: v for k, v in state.items()}}, tmp_path / "mkd.pth")
    with pytest.raises(RuntimeError, match="missing"):
        build(tmp_path / "mkd.pth")
    shapes = dict(state, **{"head.cls_score.weight": torch.zeros(1, 32, 3, 3)})
    torch.save({"model": shapes}, tmp_path / "shapes.pth")
    with pytest.raises(RuntimeError, match="mismatched shapes"):
        build(tmp_path / "shapes.pth")
    torch.save({"model": state}, tmp_path / "good.pth")
    build(tmp_path / "good.pth")  # the complete checkpoint loads


def test_training_without_teacher_weights_refuses(tmp_path):
    model = MKD(student=helpers.build("retinanet", 18, 32), teacher=helpers.build("retinanet", 34, 32),
                distiller=mkd_distiller(), masker=PatchMasker())
    with pytest.raises(RuntimeError, match="teacher that has no weights"):
        train_step(model)


class _FakeDetector(nn.Module):
    def __init__(self, shapes):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.output_shape = lambda: shapes
        self.input_format = "BGR"


def test_bad_levels_and_configuration_raise(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown distillation levels \['p2'\]"):
        make_mkd(tmp_path, levels=["p2", "p3"])
    disjoint = _FakeDetector({"q9": ShapeSpec(channels=32, stride=8)})
    with pytest.raises(ValueError, match="share none"):
        MKD(student=helpers.build("retinanet", 18, 32), teacher=disjoint,
            distiller=mkd_distiller(), masker=PatchMasker())
    with pytest.raises(ValueError, match="masks the student: give the model a masker"):
        make_mkd(tmp_path, masker=None)
    with pytest.raises(ValueError, match="task_pass"):
        make_mkd(tmp_path, task_pass="both")


def test_only_the_distilled_levels_are_compared(tmp_path):
    model = make_mkd(tmp_path, levels=["p4", "p5"])
    assert model.distiller.decoder.levels == ["p4", "p5"]
    assert math.isfinite(float(train_step(model)["loss_mkd_feat"]))


@pytest.mark.parametrize("task_pass", ["clean", "masked"])
def test_task_pass_modes(tmp_path, task_pass):
    model = make_mkd(tmp_path, task_pass=task_pass)
    bn = model.student.backbone.bottom_up.stem.conv1.norm
    seen = []
    model.student.backbone.bottom_up.stem.conv1.register_forward_pre_hook(
        lambda m, i: seen.append(float((i[0] == 0).float().mean())))
    before = bn.running_mean.clone()
    train_step(model, helpers.batch(sizes=((64, 64), (64, 64))))  # no padding
    # The clean pass sees the whole image; the masked pass about half of it hidden (zeros).
    expected_passes = 2 if task_pass == "clean" else 1
    assert len(seen) == expected_passes
    assert seen[-1] > 0.3
    if task_pass == "clean":
        assert seen[0] < 0.01
    assert not torch.equal(bn.running_mean, before)  # exactly one pass updates BN statistics


def test_masked_pass_leaves_bn_running_statistics_alone(tmp_path):
    model = make_mkd(tmp_path)
    bn = model.student.backbone.bottom_up.stem.conv1.norm
    stats = []
    bn.register_forward_hook(lambda m, i, o: stats.append(m.running_mean.clone()))
    train_step(model)
    clean_after, masked_after = stats
    assert torch.equal(clean_after, masked_after)


class RecordingMasker(PatchMasker):
    def __init__(self):
        super().__init__(patch_size=32, mask_ratio=0.5)
        self.drawn = []

    def __call__(self, *args, **kwargs):
        self.drawn.append(super().__call__(*args, **kwargs))
        return self.drawn[-1]


def test_masks_advance_with_steps_and_are_saved(tmp_path):
    model = make_mkd(tmp_path, masker=RecordingMasker())
    train_step(model)
    train_step(model)
    assert int(model.mask_step) == 2 and "mask_step" in model.state_dict()
    first, second = model.masker.drawn
    assert not torch.equal(first.grid, second.grid)


def test_exported_student_loads_into_plain_detectron2(tmp_path):
    model = make_mkd(tmp_path)
    train_step(model)
    plain = helpers.build("retinanet", 18, 32, seed=5)
    incompatible = plain.load_state_dict(student_state_dict(model.state_dict()), strict=False)
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    model.eval(), plain.eval()
    inputs = helpers.batch()
    with torch.no_grad():
        for a, b in zip(model(inputs), plain(inputs)):
            assert torch.equal(a["instances"].scores, b["instances"].scores)


def test_init_student_from_teacher_copies_matching_neck_and_head(tmp_path):
    model = make_mkd(tmp_path, init_student_from_teacher=True)
    t, s = model.teacher.state_dict(), model.student.state_dict()
    assert torch.equal(s["head.cls_score.weight"], t["head.cls_score.weight"])
    assert torch.equal(s["backbone.fpn_output4.weight"], t["backbone.fpn_output4.weight"])
    assert not torch.equal(s["backbone.bottom_up.stem.conv1.weight"],
                           t["backbone.bottom_up.stem.conv1.weight"])


def test_builds_from_the_yacs_registry(tmp_path):
    from detectron2.config import get_cfg

    from mkd import add_mkd_config

    teacher_cfg = get_cfg()
    teacher_cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    teacher_cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    teacher_cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    teacher_cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    teacher_cfg.MODEL.DEVICE = "cpu"
    (tmp_path / "teacher.yaml").write_text(teacher_cfg.dump())
    teacher = build_model(teacher_cfg)
    DetectionCheckpointer(teacher, str(tmp_path)).save("teacher")

    cfg = add_mkd_config(teacher_cfg.clone())
    cfg.MODEL.META_ARCHITECTURE = "MKD"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.MKD.TEACHER_CONFIG = str(tmp_path / "teacher.yaml")
    cfg.MODEL.MKD.TEACHER_WEIGHTS = str(tmp_path / "teacher.pth")
    cfg.MODEL.MKD.DECODER_WIDTH = 32
    cfg.MODEL.MKD.DECODER_HEADS = 4
    model = build_model(cfg)
    assert isinstance(model, FeatureDistillation) and model.teacher_loaded
    assert model.levels == ["p3", "p4", "p5", "p6", "p7"]


def test_student_weights_need_only_cover_the_bottom_up_network(tmp_path):
    source = helpers.build("retinanet", 18, 32, seed=7)
    backbone_only = {k: v for k, v in source.state_dict().items()
                     if k.startswith("backbone.bottom_up.")}  # like an ImageNet .pkl
    torch.save({"model": backbone_only}, tmp_path / "imagenet.pth")
    model = make_mkd(tmp_path, student_weights=str(tmp_path / "imagenet.pth"))
    stem = "backbone.bottom_up.stem.conv1.weight"
    assert torch.equal(model.student.state_dict()[stem], backbone_only[stem])
    del backbone_only[stem]
    torch.save({"model": backbone_only}, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match=r"1 of \d+ backbone.bottom_up.\* parameters"):
        make_mkd(tmp_path, student_weights=str(tmp_path / "partial.pth"))


@pytest.mark.parametrize("statistics", ["visible", "clean", "batch"])
def test_masked_pass_trains_and_leaves_bn_running_statistics_to_the_clean_pass(tmp_path,
                                                                               statistics):
    import copy

    model = make_mkd(tmp_path, masked_norm_statistics=statistics)
    reference = copy.deepcopy(model.student).train()
    batch = helpers.batch()
    losses = train_step(model, batch)
    assert all(math.isfinite(float(v)) for v in losses.values())
    with torch.no_grad(), EventStorage(0):
        reference(batch)  # the clean pass alone
    ours, expected = model.student.state_dict(), reference.state_dict()
    norms = [k for k in expected if k.endswith(("running_mean", "running_var"))]
    assert norms
    for key in norms:
        torch.testing.assert_close(ours[key], expected[key], msg=key)
    assert all("forward" not in vars(m) for m in model.student.modules())


def test_masked_norm_statistics_are_checked(tmp_path):
    with pytest.raises(ValueError, match="masked_norm_statistics must be one of"):
        make_mkd(tmp_path, masked_norm_statistics="sparse")
    with pytest.raises(ValueError, match="task_pass='clean'"):
        make_mkd(tmp_path, masked_norm_statistics="clean", task_pass="masked")
