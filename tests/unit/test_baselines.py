import math

import pytest
import torch
from detectron2.solver import get_default_optimizer_params
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from mkd import DistillContext
from mkd.modeling.distillers import (
    FGDDistiller,
    MGDDistiller,
    MimicDistiller,
    fgd_attention,
    fgd_foreground_masks,
    mgd_keep_mask,
)
from tests import helpers
from tests.helpers import (
    DISTILLERS,
    IMAGE,
    STRIDES,
    build_distiller,
    context,
    features,
    make_mkd,
    train_step,
)


@pytest.mark.parametrize("name", list(DISTILLERS))
def test_loss_keys_and_channel_adapters_for_mismatched_channels(name):
    distiller = build_distiller(name, student_channels=16, teacher_channels=32)
    losses = distiller(features(16), features(32, seed=1), context())
    assert set(losses) == DISTILLERS[name][1]
    assert all(v.dim() == 0 and math.isfinite(float(v)) for v in losses.values())
    for level in STRIDES:
        adapter = distiller.align[level]
        assert isinstance(adapter, nn.Conv2d) and adapter.kernel_size == (1, 1)
        assert (adapter.in_channels, adapter.out_channels) == (16, 32)


@pytest.mark.parametrize("name", list(DISTILLERS))
def test_only_mimic_adapts_equal_channels(name):
    distiller = build_distiller(name, student_channels=32, teacher_channels=32)
    expected = nn.Conv2d if name == "mimic" else nn.Identity  # FitNets' regressor vs. align
    assert all(isinstance(distiller.align[level], expected) for level in STRIDES)


def test_mimic_is_zero_on_identical_features_through_an_identity_adapter():
    distiller = build_distiller("mimic", student_channels=32, teacher_channels=32)
    with torch.no_grad():
        for adapter in distiller.align.values():
            adapter.weight.copy_(torch.eye(32)[:, :, None, None])
            adapter.bias.zero_()
    same = features(32)
    assert float(distiller(same, same, context())["loss_mimic"]) == pytest.approx(0, abs=1e-6)
    assert float(distiller(features(32, seed=1), same, context())["loss_mimic"]) > 0


def test_fgd_is_zero_on_identical_features():
    distiller = build_distiller("fgd", student_channels=32, teacher_channels=32)
    same = features(32)
    for key, value in distiller(same, same, context()).items():
        assert float(value) == pytest.approx(0, abs=1e-8), key
    different = distiller(features(32, seed=1), same, context())
    assert all(float(v) > 0 for v in different.values())


def test_fgd_attention_is_fgds_temperature_softmax():
    x = torch.randn(2, 8, 5, 3)
    spatial, channel = fgd_attention(x, temperature=0.5)
    assert spatial.shape == (2, 1, 5, 3) and channel.shape == (2, 8, 1, 1)
    torch.testing.assert_close(spatial.mean(dim=(2, 3)), torch.ones(2, 1))  # H W softmax
    torch.testing.assert_close(channel.mean(dim=1), torch.ones(2, 1, 1))  # C softmax
    expected = 15 * torch.softmax(x.abs().mean(dim=1).flatten(1) / 0.5, dim=1)
    torch.testing.assert_close(spatial.flatten(1), expected)


def test_fgd_focal_loss_matches_fgds_square_root_weighted_form():
    """FGD multiplies both features by sqrt(attention * mask) before a summed MSE."""
    distiller = build_distiller("fgd", student_channels=32, teacher_channels=32, temperature=0.7)
    s, t = features(32), features(32, seed=1)
    losses = distiller(s, t, context())
    fg_expected = bg_expected = 0.0
    for level in STRIDES:
        spatial, channel = fgd_attention(t[level], 0.7)
        fg, bg = fgd_foreground_masks(context().gt_instances, t[level].shape[-2:], STRIDES[level])
        weight = spatial.sqrt() * channel.sqrt()
        mse = nn.MSELoss(reduction="sum")
        fg_expected += mse(s[level] * weight * fg.sqrt(), t[level] * weight * fg.sqrt()) / 2
        bg_expected += mse(s[level] * weight * bg.sqrt(), t[level] * weight * bg.sqrt()) / 2
    torch.testing.assert_close(losses["loss_fgd_fg"], 1e-3 * fg_expected)
    torch.testing.assert_close(losses["loss_fgd_bg"], 5e-4 * bg_expected)


def test_fgd_foreground_mask_marks_the_box_cells_with_inverse_area():
    image = (64, 64)
    boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 24.0]]))
    fg, bg = fgd_foreground_masks([Instances(image, gt_boxes=boxes)], (8, 8), stride=8)
    expected = torch.zeros(1, 1, 8, 8)
    expected[..., 1:3, 1:5] = 1 / 8  # rows 8..24 px, columns 8..40 px: 2 x 4 cells
    torch.testing.assert_close(fg, expected)
    assert torch.all(bg[expected > 0] == 0)
    torch.testing.assert_close(bg[expected == 0], torch.full((56,), 1 / 56))
    assert float(bg.sum()) == pytest.approx(1)


def test_fgd_foreground_mask_overlaps_take_the_max_and_empty_images_are_background():
    image = (64, 64)
    big_and_small = Boxes(torch.tensor([[0.0, 0.0, 64.0, 64.0], [20.0, 20.0, 30.0, 30.0]]))
    empty = Boxes(torch.zeros(0, 4))
    fg, bg = fgd_foreground_masks(
        [Instances(image, gt_boxes=big_and_small), Instances(image, gt_boxes=empty)],
        (8, 8), stride=8,
    )
    # The small box (x, y in 2.5..3.75 cells) covers cells 2..3: 4 cells, weight 1/4.
    assert float(fg[0, 0, 2, 2]) == 1 / 4 and float(fg[0, 0, 0, 0]) == 1 / 64
    assert float(bg[0].sum()) == 0  # all foreground
    assert torch.all(fg[1] == 0)
    torch.testing.assert_close(bg[1], torch.full((1, 8, 8), 1 / 64))


def test_fgd_needs_ground_truth():
    distiller = build_distiller("fgd")
    with pytest.raises(ValueError, match="ground-truth boxes"):
        distiller(features(16), features(32), DistillContext(image_size=IMAGE))


def test_mgd_loss_is_positive_and_masks_the_configured_fraction():
    torch.manual_seed(0)
    distiller = build_distiller("mgd", student_channels=32, teacher_channels=32)
    same = features(32)
    loss = float(distiller(same, same, context())["loss_mgd"])
    assert math.isfinite(loss) and loss > 0  # the generator cannot be the identity
    draws = torch.stack([mgd_keep_mask(torch.zeros(4, 8, 16, 16), 0.65) for _ in range(50)])
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert float(1 - draws.mean()) == pytest.approx(0.65, abs=0.01)
    assert torch.all(mgd_keep_mask(torch.zeros(4, 8, 16, 16), 0.0) == 1)


@pytest.mark.parametrize("name", list(DISTILLERS))
def test_gradients_reach_student_and_distiller_never_teacher(name):
    distiller = build_distiller(name, student_channels=16, teacher_channels=32)
    student, teacher = features(16, requires_grad=True), features(32, seed=1)
    sum(distiller(student, teacher, context()).values()).backward()
    assert all(not t.requires_grad and t.grad is None for t in teacher.values())
    for param_name, p in distiller.named_parameters():
        assert p.grad is not None, param_name
    for level, s in student.items():
        # Standardising a single position over H x W gives 0: mimic's 1x1 P7 carries no signal.
        if name != "mimic" or s[0, 0].numel() > 1:
            assert s.grad.abs().sum() > 0, level
            assert distiller.align[level].weight.grad.abs().sum() > 0, level


@pytest.mark.parametrize("make, match", [
    (lambda: MimicDistiller(weight=-1), "weight"),
    (lambda: MimicDistiller(normalize="batch"), "normalize"),
    (lambda: FGDDistiller(temperature=0), "temperature"),
    (lambda: FGDDistiller(alpha_fg=-1e-3), "alpha_fg"),
    (lambda: FGDDistiller(beta_bg=-1), "beta_bg"),
    (lambda: FGDDistiller(gamma_attention=-1), "gamma_attention"),
    (lambda: FGDDistiller(lambda_global=-1), "lambda_global"),
    (lambda: MGDDistiller(alpha=-1), "alpha"),
    (lambda: MGDDistiller(mask_ratio=1.0), "mask_ratio"),
    (lambda: MGDDistiller(mask_ratio=-0.1), "mask_ratio"),
])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("name", list(DISTILLERS))
def test_one_training_step_with_the_meta_architecture(tmp_path, name):
    model = make_mkd(tmp_path, teacher=("retinanet", 34, 32), student=("retinanet", 18, 16),
                     distiller=DISTILLERS[name][0](), masker=None)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    optimizer = torch.optim.SGD(get_default_optimizer_params(model), lr=0.01)
    losses = train_step(model)
    assert DISTILLERS[name][1] <= set(losses) and "loss_cls" in losses
    assert all(math.isfinite(float(v)) for v in losses.values())
    assert model.student.backbone.fpn_output3.weight.grad.abs().sum() > 0
    assert all(a.weight.grad is not None for a in model.distiller.align.values())
    assert all(p.grad is None for p in model.teacher.parameters())
    optimizer.step()
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


@pytest.mark.parametrize("name", list(DISTILLERS))
def test_losses_are_fp32_and_finite_under_autocast(tmp_path, name):
    model = make_mkd(tmp_path, teacher=("retinanet", 18, 32), student=("retinanet", 18, 16),
                     distiller=DISTILLERS[name][0](), masker=None).train()
    batch = helpers.batch(sizes=((64, 64),))  # one small image: fp16 convolutions are slow on CPU
    for dtype in (torch.float16, torch.bfloat16):
        model.zero_grad()
        with EventStorage(0), torch.autocast("cpu", dtype=dtype):
            losses = model(batch)
        sum(losses.values()).backward()
        for key in DISTILLERS[name][1]:
            assert math.isfinite(float(losses[key])), (dtype, key)
            assert losses[key].dtype == torch.float32, (dtype, key)
        assert all(torch.isfinite(a.weight.grad).all() for a in model.distiller.align.values())


def test_masked_mimic_scores_the_masked_students_features(tmp_path, monkeypatch):
    from mkd import PatchMasker

    with pytest.raises(ValueError, match="give the model a masker"):
        make_mkd(tmp_path, distiller=MimicDistiller(masked=True), masker=None)
    model = make_mkd(tmp_path, distiller=MimicDistiller(masked=True),
                     masker=PatchMasker(patch_size=32, mask_ratio=0.5))
    scored = []
    original = model.distiller.forward
    monkeypatch.setattr(model.distiller, "forward",
                        lambda s, t, c: scored.append((s, c)) or original(s, t, c))
    losses = train_step(model)
    (student, ctx), = scored
    assert ctx.mask is not None and "loss_mimic" in losses
    # The scored features are the masked pass's: recomputing them with the same mask agrees.
    model.train()
    images = model.student.preprocess_image(helpers.batch()).tensor
    with torch.no_grad():
        again = model.masked_student_features(images, ctx.mask)
    torch.testing.assert_close(student["p3"].detach(), again["p3"], rtol=1e-4, atol=1e-4)
