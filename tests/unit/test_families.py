"""Every FPN family of Detectron2's model zoo as MKD teacher or student (FCOS, Cascade R-CNN,
RegNetX/Y bottom-ups, a ViTDet teacher), and the teacher's own input handling: channel order,
normalisation and padding of its own, features cropped to the student's padded size."""
import math

import pytest
import torch
from detectron2 import modeling
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.modeling.backbone import RegNet
from detectron2.structures import ImageList
from detectron2.utils.events import EventStorage

from mkd import PatchMasker
from mkd.modeling.masking import MaskedConvolutions
from tests import helpers
from tests.helpers import check_step_and_eval, wrap_mkd

FCOS = "COCO-Detection/fcos_R_50_FPN_1x.py"
CASCADE = "common/models/cascade_rcnn.py"
REGNETX = "COCO-InstanceSegmentation/mask_rcnn_regnetx_4gf_dds_fpn_1x.py"
REGNETY = "COCO-InstanceSegmentation/mask_rcnn_regnety_4gf_dds_fpn_1x.py"
LSJ_R50 = "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py"
VITDET = "common/models/mask_rcnn_vitdet.py"
RETINANET = "COCO-Detection/retinanet_R_50_FPN_1x.py"


def test_fcos_teacher_and_student(tmp_path):
    teacher, student = helpers.build_zoo(FCOS, seed=0), helpers.build_zoo(FCOS, seed=1)
    assert not hasattr(student, "input_format")  # what broke MKD before
    model = wrap_mkd(tmp_path, teacher, student)
    assert model.levels == ["p3", "p4", "p5", "p6", "p7"]
    check_step_and_eval(model)


def test_cascade_rcnn_teacher_and_student(tmp_path):
    teacher, student = helpers.build_zoo(CASCADE, seed=0), helpers.build_zoo(CASCADE, seed=1)
    assert isinstance(student.roi_heads, modeling.roi_heads.CascadeROIHeads)
    losses = check_step_and_eval(wrap_mkd(tmp_path, teacher, student))
    assert {"loss_box_reg_stage2", "loss_mask"} <= set(losses)


@pytest.mark.parametrize("config", [REGNETX, REGNETY], ids=["regnetx", "regnety"])
def test_regnet_teacher_and_student(tmp_path, config):
    teacher, student = helpers.build_zoo(config, seed=0), helpers.build_zoo(config, seed=1)
    assert isinstance(student.backbone.bottom_up, RegNet)
    check_step_and_eval(wrap_mkd(tmp_path, teacher, student))


def test_semantic_segmentor_student(tmp_path):
    """A student without input_format, distilled from a Mask R-CNN teacher."""
    panoptic = helpers.zoo_model_config("common/models/panoptic_fpn.py")
    for shape in panoptic.sem_seg_head.input_shape.values():
        shape.channels = panoptic.backbone.out_channels
    torch.manual_seed(1)
    student = instantiate(L(modeling.SemanticSegmentor)(
        backbone=panoptic.backbone, sem_seg_head=panoptic.sem_seg_head,
        pixel_mean=panoptic.pixel_mean, pixel_std=panoptic.pixel_std,
    ))
    assert not hasattr(student, "input_format")
    inputs = helpers.batch()
    for x in inputs:
        x["sem_seg"] = (x["instances"].gt_masks.tensor.long() * 7).amax(dim=0)
    losses = check_step_and_eval(
        wrap_mkd(tmp_path, helpers.build_zoo(LSJ_R50, seed=0), student), inputs)
    assert "loss_sem_seg" in losses


@pytest.mark.skipif(not hasattr(modeling, "ViT"),
                    reason="Detectron2 0.6 has no ViT/SimpleFeaturePyramid (ViTDet came later)")
def test_vitdet_teacher_with_lsj_mask_rcnn_student(tmp_path):
    teacher, student = helpers.build_zoo(VITDET, seed=0), helpers.build_zoo(LSJ_R50, seed=1)
    assert (teacher.input_format, student.input_format) == ("RGB", "BGR")
    model = wrap_mkd(tmp_path, teacher, student)
    seen = []
    teacher.backbone.register_forward_pre_hook(lambda m, i: seen.append(i[0].shape[-2:]))
    check_step_and_eval(model)
    assert seen == [(256, 256)]  # its own square padding; the student's batch is 128 x 128


def _teacher_input(model, inputs):
    """What the teacher's backbone receives in a training step, and the features MKD keeps."""
    seen = {}
    model.teacher.backbone.register_forward_pre_hook(lambda m, i: seen.update(images=i[0]))
    model.student.backbone.register_forward_pre_hook(lambda m, i: seen.update(student=i[0]))
    model.train()
    with EventStorage(0):
        model(inputs)
    return seen["images"], seen["student"]


def _pad_to_square(model, size):
    """Makes ``model.preprocess_image`` pad to a ``size`` square after its own normalisation,
    as ViTDet's ``square_pad`` does (Detectron2 0.6 has no square padding)."""
    own = model.preprocess_image

    def preprocess_image(batched_inputs):
        images = own(batched_inputs)
        height, width = images.tensor.shape[-2:]
        padded = torch.nn.functional.pad(images.tensor, (0, size - width, 0, size - height))
        return ImageList(padded, images.image_sizes)

    model.preprocess_image = preprocess_image


def test_teacher_gets_its_own_channel_order_normalisation_and_padding(tmp_path):
    """An RGB teacher with ImageNet std that pads to a 128 square teaches a BGR student."""
    cfg = helpers.zoo_model_config(RETINANET)
    cfg.update(input_format="RGB", pixel_mean=[123.675, 116.28, 103.53],
               pixel_std=[58.395, 57.12, 57.375])
    torch.manual_seed(0)
    teacher = instantiate(cfg)
    _pad_to_square(teacher, 128)
    model = wrap_mkd(tmp_path, teacher, helpers.build_zoo(LSJ_R50, seed=1))
    inputs = helpers.batch(sizes=((64, 48), (40, 64)))
    images, student_images = _teacher_input(model, inputs)
    assert student_images.shape[-2:] == (64, 64)
    rgb = [(x["image"].flip(0) - teacher.pixel_mean) / teacher.pixel_std for x in inputs]
    expected = torch.zeros(2, 3, 128, 128)
    for i, image in enumerate(rgb):
        expected[i, :, :image.shape[1], :image.shape[2]] = image
    torch.testing.assert_close(images, expected)
    # The distilled features are the teacher's on the student's grid: the top-left crop.
    with torch.no_grad():
        full = teacher.backbone(images)
    cropped = model.teacher_features(inputs, student_images)
    for k in model.levels:
        rows = math.ceil(64 / teacher.backbone.output_shape()[k].stride)
        assert full[k].shape[-1] > rows and cropped[k].shape[-2:] == (rows, rows)
        torch.testing.assert_close(cropped[k], full[k][..., :rows, :rows])
    check_step_and_eval(model, inputs)


def test_teacher_that_preprocesses_alike_reuses_the_student_batch(tmp_path, monkeypatch):
    teacher, student = helpers.build_zoo(LSJ_R50, seed=0), helpers.build_zoo(LSJ_R50, seed=1)
    model = wrap_mkd(tmp_path, teacher, student)
    monkeypatch.setattr(teacher, "preprocess_image", lambda *a: pytest.fail("not reused"))
    images, student_images = _teacher_input(model, helpers.batch())
    assert images is student_images


def test_teacher_padding_less_than_the_student_is_refused(tmp_path):
    teacher, student = helpers.build_zoo(LSJ_R50, seed=0), helpers.build_zoo(LSJ_R50, seed=1)
    teacher.pixel_std.fill_(57.0)  # its own preprocessing
    _pad_to_square(student, 128)
    model = wrap_mkd(tmp_path, teacher, student)
    model.train()
    with pytest.raises(ValueError, match=r"Level p2: the teacher's features \(16, 16\) are "
                                         r"smaller than the student's \(32, 32\).*multiple of "
                                         r"the student's \(32\)"):
        with EventStorage(0):
            model(helpers.batch(sizes=((64, 64), (64, 48))))


def test_unconvertible_channel_order_or_no_preprocessing_is_refused(tmp_path):
    teacher, student = helpers.build_zoo(LSJ_R50, seed=0), helpers.build_zoo(LSJ_R50, seed=1)
    teacher.input_format = "YUV-BT.601"
    with pytest.raises(ValueError, match="teacher reads YUV-BT.601 images, the student BGR: "
                                         "MKD converts only between RGB and BGR"):
        wrap_mkd(tmp_path, teacher, student)
    teacher.input_format = "BGR"
    teacher.pixel_std.fill_(57.0)
    teacher.preprocess_image = None  # a teacher that cannot preprocess by itself
    with pytest.raises(ValueError, match="normalises or pads unlike the GeneralizedRCNN student"
                                         ".*no preprocess_image"):
        wrap_mkd(tmp_path, teacher, student)


def _regnety_student_backbone():
    return helpers.build_zoo(REGNETY, seed=1).backbone.bottom_up.eval()


def test_squeeze_excitation_averages_visible_positions_and_gates_unmasked():
    """The SE's pool averages over visible positions only; its 1x1 convolutions see the pooled
    vector as it is (the image-space mask has no positions to apply there)."""
    bottom_up = _regnety_student_backbone()
    masked = MaskedConvolutions(bottom_up)
    se = bottom_up.s3.b1.f.se
    assert all(conv not in masked.convs for conv in se.f_ex if isinstance(conv, torch.nn.Conv2d))
    seen = {}
    se.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(96, 128)] * 2, [0, 1], step=3)
    with torch.no_grad():
        with masked.active(mask):
            bottom_up(torch.randn(2, 3, 96, 128))
        x = seen["x"]
        visible = mask.at_feature(x)
        pooled = (x * visible).sum((2, 3), keepdim=True) / visible.sum((2, 3), keepdim=True)
        torch.testing.assert_close(seen["y"], x * se.f_ex(pooled))
        assert not torch.allclose(seen["y"], se(x))  # a plain average differs


def test_activations_at_hidden_positions_never_reach_visible_regnety_features():
    """The invariant of masked convolutions, through squeeze-and-excitation: whatever the
    hidden positions hold at the input of every SE block, the bottom-up features at visible
    positions do not change (a plain average over all positions would change them)."""
    bottom_up = _regnety_student_backbone()
    masked = MaskedConvolutions(bottom_up)
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(96, 128), (64, 128)], [0, 1], step=4)
    image = torch.randn(2, 3, 96, 128)
    blocks = [m for m in bottom_up.modules() if type(m).__name__ == "SE"]
    assert len(blocks) == 4

    def scramble_hidden(module, inputs):
        x = inputs[0]
        return (x + 10 * torch.randn(x.shape) * (1 - mask.at_feature(x)),)

    def features(scrambled):
        handles = [b.register_forward_pre_hook(scramble_hidden) for b in blocks if scrambled]
        with torch.no_grad(), masked.active(mask):
            out = bottom_up(image)
        for handle in handles:
            handle.remove()
        return out

    def visible_parts(out):
        return {k: v[mask.at_feature(v).bool().expand_as(v)] for k, v in out.items()}

    clean, scrambled = visible_parts(features(False)), visible_parts(features(True))
    for name in clean:
        torch.testing.assert_close(scrambled[name], clean[name], rtol=0, atol=1e-5)
    for block in blocks:
        block.avg_pool = torch.nn.AdaptiveAvgPool2d((1, 1))  # a plain average, unhooked
    clean, scrambled = visible_parts(features(False)), visible_parts(features(True))
    assert not torch.allclose(scrambled["s4"], clean["s4"], atol=1e-3)
