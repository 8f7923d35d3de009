from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.utils.events import EventStorage
from omegaconf import OmegaConf

from mkd import (
    DistillContext,
    FeatureDistiller,
    FeatureLoss,
    GcBlock,
    GlobalLoss,
    MKDDecoder,
    MKDDistiller,
    PatchMasker,
)
from mkd.modeling.decoder import _sincos_position_embedding
from mkd.modeling.losses import normalize_features
from tests import helpers
from tests.helpers import make_mkd

DEFAULTS = Path(__file__).resolve().parents[2] / "configs" / "common" / "mkd.py"

STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}


def _features(channels, height, width, batch=2, levels=STRIDES):
    """FPN-like maps of a (height, width) padded batch: sizes as a stride-2 conv chain gives."""
    out = {}
    for level, stride in levels.items():
        out[level] = torch.randn(batch, channels, -(-height // stride), -(-width // stride))
    return out


@pytest.mark.parametrize("one_sequence", [True, False])
@pytest.mark.parametrize("size", [(96, 160), (64, 64), (224, 96)])
def test_decoder_output_matches_teacher_shapes_at_every_level(one_sequence, size):
    student_c, teacher_c = 24, 40
    shapes = lambda c: {k: ShapeSpec(channels=c, stride=s) for k, s in STRIDES.items()}  # noqa
    decoder = MKDDecoder(width=32, depth=1, num_heads=4, patch_size=32,
                         one_sequence=one_sequence).build(shapes(student_c), shapes(teacher_c))
    student = _features(student_c, *size)
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([size] * 2, [0, 1], step=0)
    out = decoder(student, mask)
    assert set(out) == set(STRIDES)  # p < 1 levels (P6, P7) included
    for level, feature in student.items():
        assert out[level].shape == (2, teacher_c) + feature.shape[-2:], level


def test_hidden_cells_are_replaced_by_mask_tokens():
    shapes = {k: ShapeSpec(channels=8, stride=STRIDES[k]) for k in ("p3", "p4", "p5")}
    decoder = MKDDecoder(width=16, depth=1, num_heads=2, patch_size=32).build(shapes, shapes)
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(128, 128)], [0], step=0)
    levels = {k: STRIDES[k] for k in shapes}
    student = _features(8, 128, 128, batch=1, levels=levels)
    changed = {}
    for level, x in student.items():
        hidden = 1 - mask.at(x.shape[-2], x.shape[-1], STRIDES[level])
        changed[level] = x + 3 * torch.randn_like(x) * hidden
    a, b = decoder(student, mask), decoder(changed, mask)
    for level in a:
        torch.testing.assert_close(a[level], b[level])


def test_decoder_rejects_incompatible_patch_size():
    shapes = {"p3": ShapeSpec(channels=8, stride=8)}
    with pytest.raises(ValueError, match="neither divides nor is a multiple"):
        MKDDecoder(width=16, depth=1, num_heads=2, patch_size=12).build(shapes, shapes)


@pytest.mark.parametrize("normalize", ["channel", "layernorm", "image", "none"])
@pytest.mark.parametrize("positions", ["all", "hidden"])
def test_feature_loss_is_zero_on_identical_features_and_positive_otherwise(normalize, positions):
    loss = FeatureLoss(normalize=normalize, positions=positions)
    feats = _features(16, 64, 64, levels={"p3": 8, "p4": 16})
    hidden = {k: (torch.rand(2, 1, *v.shape[-2:]) > 0.5).float() for k, v in feats.items()}
    assert loss(feats, feats, hidden) == 0
    other = _features(16, 64, 64, levels={"p3": 8, "p4": 16})
    assert loss(other, feats, hidden) > 0


def test_feature_loss_value_and_normalisation():
    s = {"p3": torch.randn(2, 4, 5, 5)}
    t = {"p3": torch.randn(2, 4, 5, 5)}
    expected = (normalize_features(s["p3"]) - normalize_features(t["p3"])).pow(2).mean() / 2
    torch.testing.assert_close(FeatureLoss()(s, t), expected)
    # Per-channel standardisation makes the loss blind to the teacher's channel scale/offset.
    scaled = {"p3": t["p3"] * torch.rand(1, 4, 1, 1).add(0.5) * 10 + 3}
    torch.testing.assert_close(FeatureLoss()(s, scaled), expected, rtol=1e-4, atol=1e-5)
    hidden = {"p3": torch.zeros(2, 1, 5, 5)}
    hidden["p3"][:, :, :2] = 1
    on_hidden = FeatureLoss(positions="hidden")(s, t, hidden)
    diff = (normalize_features(s["p3"]) - normalize_features(t["p3"]))[:, :, :2]
    torch.testing.assert_close(on_hidden, diff.pow(2).mean() / 2)


def test_image_normalisation_is_scale_free_and_keeps_relative_magnitudes():
    x = torch.randn(2, 4, 5, 5) * torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, 4, 1, 1)
    out = normalize_features(x, "image")
    torch.testing.assert_close(normalize_features(100 * x - 3, "image"), out, rtol=1e-4,
                               atol=1e-5)
    assert out.mean(dim=(1, 2, 3)).abs().max() < 1e-5
    torch.testing.assert_close(out.var(dim=(1, 2, 3), unbiased=False), torch.ones(2))
    std = out.std(dim=(2, 3)).mean(0)
    assert (std[1:] > std[:-1]).all()  # the channels' scales keep their order


def test_gcblock_starts_as_identity_and_global_loss_learns():
    block = GcBlock(8)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(x), x)
    loss = GlobalLoss().build({"p3": 8})
    feats = {"p3": x}
    assert loss(feats, feats) == 0
    value = loss({"p3": torch.randn(2, 8, 6, 6, requires_grad=True)}, feats)
    value.backward()
    assert value > 0
    assert loss.student_blocks["p3"].transform[-1].weight.grad.abs().sum() > 0
    assert loss.teacher_blocks["p3"].transform[-1].weight.grad.abs().sum() > 0


def test_global_loss_refuses_per_channel_standardisation_which_would_cancel_it():
    with pytest.raises(ValueError, match="normalize must be one of"):
        GlobalLoss(normalize="channel")
    # Why: the GcBlock's transform adds a constant per channel, and standardised maps have zero
    # mean per channel, so the transform's last layer gets exactly zero gradient.
    loss = GlobalLoss(normalize="none").build({"p3": 8})
    s = {"p3": normalize_features(torch.randn(2, 8, 6, 6))}
    t = {"p3": normalize_features(torch.randn(2, 8, 6, 6))}
    loss(s, t).backward()
    last = loss.student_blocks["p3"].transform[-1]
    assert last.weight.grad.abs().max() < 1e-6 and last.bias.grad.abs().max() < 1e-6
    raw = GlobalLoss(normalize="none").build({"p3": 8})
    raw({"p3": torch.randn(2, 8, 6, 6)}, {"p3": torch.randn(2, 8, 6, 6) + 1}).backward()
    assert raw.student_blocks["p3"].transform[-1].bias.grad.abs().sum() > 0


def test_global_loss_reductions():
    s, t = {"p3": torch.randn(2, 8, 4, 4)}, {"p3": torch.randn(2, 8, 4, 4)}
    mean = GlobalLoss(reduction="mean").build({"p3": 8})(s, t)
    total = GlobalLoss(reduction="sum").build({"p3": 8})(s, t)
    torch.testing.assert_close(total, mean * 2 * 8 * 4 * 4 * 2 / 2)


def test_bad_loss_settings():
    with pytest.raises(ValueError, match="normalize must be one of"):
        FeatureLoss(normalize="batch")
    with pytest.raises(ValueError, match="positions must be one of"):
        FeatureLoss(positions="visible")
    with pytest.raises(ValueError, match="reduction must be one of"):
        GlobalLoss(reduction="max")
    with pytest.raises(ValueError, match="needs the student's patch mask"):
        FeatureLoss(positions="hidden")({"p3": torch.zeros(1, 1, 2, 2)},
                                        {"p3": torch.zeros(1, 1, 2, 2)})


def test_distiller_without_adapter_rejects_channel_mismatch():
    student = {"p3": ShapeSpec(channels=64, stride=8)}
    teacher = {"p3": ShapeSpec(channels=256, stride=8)}
    with pytest.raises(ValueError, match="channel mismatch at level p3: student 64, teacher 256"):
        FeatureDistiller().build(student, teacher)


def _hidden_reference(mask, stride):
    """1 - each position's visible share of the stride x stride pixels it sees."""
    pixels = mask.at(*mask.padded_size, 1)
    height, width = pixels.shape[-2:]
    pixels = torch.nn.functional.pad(pixels, (0, -width % stride, 0, -height % stride))
    return 1 - torch.nn.functional.avg_pool2d(pixels, stride)


def test_hidden_positions_loss_weighs_each_level_by_the_patches_it_sees():
    size = (96, 160)  # P6 is 2 x 3 and P7 1 x 2: ceil-sized, non-square
    levels = {k: STRIDES[k] for k in ("p5", "p6", "p7")}
    shapes = {k: ShapeSpec(channels=8, stride=s) for k, s in levels.items()}
    distiller = MKDDistiller(
        decoder=MKDDecoder(width=16, depth=1, num_heads=2, patch_size=32),
        feature_loss=FeatureLoss(positions="hidden"),
    ).build(shapes, shapes)
    mask = PatchMasker(patch_size=32, mask_ratio=0.5, seed=0)([size, (64, 90)], [0, 1], 0)
    mask.padded_size = size
    student, teacher = _features(8, *size, levels=levels), _features(8, *size, levels=levels)
    loss = distiller(student, teacher, DistillContext(image_size=size, mask=mask))
    hidden = {k: _hidden_reference(mask, s) for k, s in levels.items()}
    expected = FeatureLoss(positions="hidden")(distiller.decoder(student, mask), teacher, hidden)
    torch.testing.assert_close(loss["loss_mkd_feat"], expected)


def _mkd_on_random_features(positions="all", scale=1.0, size=(96, 160)):
    """An MKD distiller (feature and global losses, unequal weights) on P5-P7 of a ``size``
    batch (P6 2 x 3, P7 1 x 2 at 96 x 160), its features and an applied mask."""
    levels = {k: STRIDES[k] for k in ("p5", "p6", "p7")}
    torch.manual_seed(0)
    distiller = MKDDistiller(
        decoder=MKDDecoder(width=16, depth=1, num_heads=2, patch_size=32),
        feature_loss=FeatureLoss(positions=positions), global_loss=GlobalLoss(),
        feature_weight=2.0, global_weight=0.5, student_gradient_scale=scale,
    ).build(*[{k: ShapeSpec(channels=c, stride=s) for k, s in levels.items()} for c in (8, 12)])
    mask = PatchMasker(patch_size=32, mask_ratio=0.5, seed=0)([size, (64, 90)], [0, 1], 0)
    mask.padded_size = size
    return distiller, _features(8, *size, levels=levels), _features(12, *size, levels=levels), mask


@pytest.mark.parametrize("positions", ["all", "hidden"])
def test_mkd_forward_is_the_weighted_sum_of_its_level_terms_bit_for_bit(positions):
    distiller, student, teacher, mask = _mkd_on_random_features(positions)
    losses = distiller(student, teacher, DistillContext(image_size=(96, 160), mask=mask))
    reconstructed = distiller.reconstruct(student, mask)
    for level, x in distiller.decoder(student, mask).items():
        assert torch.equal(reconstructed[level], x), level
    terms = distiller.level_terms(reconstructed, teacher, mask)
    assert {name: (weight, set(per_level)) for name, (weight, per_level) in terms.items()} == {
        "loss_mkd_feat": (2.0, {"p5", "p6", "p7"}), "loss_mkd_global": (0.5, {"p5", "p6", "p7"})}
    assert losses.keys() == terms.keys()
    for name, (weight, per_level) in terms.items():
        assert torch.equal(losses[name], weight * sum(per_level.values())), name


def test_mkd_hidden_positions_are_each_levels_hidden_share_and_weigh_only_the_hidden_loss():
    distiller, student, teacher, mask = _mkd_on_random_features("hidden")
    reconstructed = distiller.reconstruct(student, mask)
    hidden = distiller.hidden_positions(reconstructed, mask)
    for level, stride in (("p5", 32), ("p6", 64), ("p7", 128)):
        torch.testing.assert_close(hidden[level], _hidden_reference(mask, stride))
    assert 0 < float(hidden["p5"].mean()) < 1 and set(hidden["p5"].unique().tolist()) == {0, 1}
    terms = distiller.level_terms(reconstructed, teacher, mask)["loss_mkd_feat"][1]
    expected = FeatureLoss(positions="hidden").level_terms(reconstructed, teacher, hidden)
    all_positions = FeatureLoss().level_terms(reconstructed, teacher)
    for level, term in terms.items():
        torch.testing.assert_close(term, expected[level])
        assert not torch.allclose(term, all_positions[level]), level
    # Over all positions the mask does not enter the feature loss.
    distiller.feature_loss = FeatureLoss()
    terms = distiller.level_terms(reconstructed, teacher, mask)["loss_mkd_feat"][1]
    for level, term in terms.items():
        torch.testing.assert_close(term, all_positions[level])


def test_mkd_reconstruct_scales_only_the_gradient_into_the_student():
    gradients = []
    for scale in (1.0, 3.0, 0.0):
        distiller, student, teacher, mask = _mkd_on_random_features(scale=scale)
        student = {k: v.requires_grad_() for k, v in student.items()}
        reconstructed = distiller.reconstruct(student, mask)
        sum(x.pow(2).sum() for x in reconstructed.values()).backward()
        gradients.append((reconstructed, {k: v.grad for k, v in student.items()},
                          [p.grad for p in distiller.decoder.parameters()]))
    (plain, into_student, own), *scaled = gradients
    for scale, (reconstructed, scaled_into_student, scaled_own) in zip((3.0, 0.0), scaled):
        for level, x in plain.items():
            assert torch.equal(reconstructed[level], x), (scale, level)
            assert into_student[level].abs().sum() > 0
            torch.testing.assert_close(scaled_into_student[level], scale * into_student[level])
        for grad, scaled_grad in zip(own, scaled_own):
            torch.testing.assert_close(scaled_grad, grad)


def _default_mkd(tmp_path):
    """MKD with configs/common/mkd.py's distiller and masker, on the tiny pair."""
    cfg = LazyConfig.load(str(DEFAULTS))
    cfg.model.distiller.decoder.update(width=32, depth=1, num_heads=4)
    cfg.model.masker.seed = 0  # the same masks in every run of the tests
    model = make_mkd(tmp_path, distiller=instantiate(cfg.model.distiller),
                     masker=instantiate(cfg.model.masker))
    return model.train()


def _distillation_losses(model, scale=1.0, batch=None):
    """The first step's losses, with the teacher's features multiplied by ``scale``."""
    model.mask_step.zero_()
    hook = model.teacher.backbone.register_forward_hook(
        lambda module, inputs, output: {k: scale * v for k, v in output.items()})
    try:
        with EventStorage(0):
            losses = model(batch or helpers.batch())
    finally:
        hook.remove()
    return losses


def test_default_losses_do_not_follow_the_teacher_feature_scale_and_the_gcblock_learns(
    tmp_path,
):
    model = _default_mkd(tmp_path)
    plain = _distillation_losses(model)
    scaled = _distillation_losses(model, scale=100.0)
    for name in ("loss_mkd_feat", "loss_mkd_global"):
        assert float(scaled[name]) == pytest.approx(float(plain[name]), rel=1e-4), name
    scaled["loss_mkd_global"].backward()
    global_loss = model.distiller.global_loss
    for blocks in (global_loss.student_blocks, global_loss.teacher_blocks):
        for level, block in blocks.items():
            assert block.transform[-1].weight.grad.abs().sum() > 0, level


def test_an_mkd_step_under_autocast_has_finite_fp32_losses(tmp_path):
    model = _default_mkd(tmp_path)
    # One image (fp16 convolutions are slow on CPU), 128 px: at 64 px P5 is 2x2, and
    # standardising a channel over 4 positions amplifies bf16's 8-bit rounding to ~15 % there.
    batch = helpers.batch(sizes=((128, 128),))
    reference = _distillation_losses(model, batch=batch)
    for dtype in (torch.float16, torch.bfloat16):
        model.zero_grad()
        model.mask_step.zero_()
        with EventStorage(0), torch.autocast("cpu", dtype=dtype):
            losses = model(batch)
        sum(losses.values()).backward()
        for name in ("loss_mkd_feat", "loss_mkd_global"):
            assert losses[name].dtype == torch.float32, (dtype, name)
            assert float(losses[name]) == pytest.approx(float(reference[name]), rel=0.05), (
                dtype, name)
        decoder = model.distiller.decoder
        assert all(torch.isfinite(p.grad).all() for p in decoder.parameters()
                   if p.grad is not None)


@pytest.mark.parametrize("token_stride", [8, 16])
def test_decoupled_token_stride_gives_every_level_its_shape_and_gradient(token_stride):
    shapes = lambda c: {k: ShapeSpec(channels=c, stride=s) for k, s in STRIDES.items()}  # noqa
    decoder = MKDDecoder(width=32, depth=1, num_heads=4, patch_size=32,
                         token_stride=token_stride).build(shapes(24), shapes(40))
    size = (96, 160)
    student = {k: v.requires_grad_() for k, v in _features(24, *size).items()}
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([size] * 2, [0, 1], step=0)
    out = decoder(student, mask)
    for level, feature in student.items():
        assert out[level].shape == (2, 40) + feature.shape[-2:], level
    sum(o.pow(2).sum() for o in out.values()).backward()
    for level, feature in student.items():
        assert feature.grad.abs().sum() > 0, level
    # P3 (stride 8) gets (token_stride / 8)^2 positions per token (16 at one token per patch).
    tokens_per_side = [-(-side // token_stride) for side in size]
    assert decoder.sam["p3"](torch.zeros(1, 32, 12, 20)).shape[-2:] == tuple(tokens_per_side)


def test_finer_tokens_still_hide_every_hidden_patch():
    shapes = {k: ShapeSpec(channels=8, stride=STRIDES[k]) for k in ("p3", "p4", "p5")}
    decoder = MKDDecoder(width=16, depth=1, num_heads=2, patch_size=32,
                         token_stride=8).build(shapes, shapes)
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(128, 128)], [0], step=0)
    student = _features(8, 128, 128, batch=1, levels={k: STRIDES[k] for k in shapes})
    changed = {level: x + 3 * torch.randn_like(x)
               * (1 - mask.at(x.shape[-2], x.shape[-1], STRIDES[level]))
               for level, x in student.items()}
    a, b = decoder(student, mask), decoder(changed, mask)
    for level in a:
        torch.testing.assert_close(a[level], b[level])


def test_token_stride_must_divide_the_patch_size():
    with pytest.raises(ValueError, match="must divide the mask's patch_size 32"):
        MKDDecoder(width=16, depth=1, num_heads=2, patch_size=32, token_stride=12)


def test_a_decoder_without_transformer_maps_each_token_alone():
    shapes = {"p4": ShapeSpec(channels=8, stride=16)}
    decoder = MKDDecoder(width=16, depth=0, num_heads=2, patch_size=32).build(shapes, shapes)
    mask = PatchMasker(patch_size=32, mask_ratio=0.0)([(64, 64)], [0], step=0)
    student = _features(8, 64, 64, batch=1, levels={"p4": 16})
    changed = {"p4": student["p4"].clone()}
    changed["p4"][..., :2, :2] += 5  # the top-left token's positions only
    a, b = decoder(student, mask)["p4"], decoder(changed, mask)["p4"]
    assert not torch.allclose(a[..., :2, :2], b[..., :2, :2])
    torch.testing.assert_close(a[..., 2:, :], b[..., 2:, :])  # no context: others unchanged
    torch.testing.assert_close(a[..., :, 2:], b[..., :, 2:])


def test_sam_norm_normalises_the_student_tokens_not_the_mask_tokens():
    shapes = {"p3": ShapeSpec(channels=8, stride=8), "p5": ShapeSpec(channels=8, stride=32),
              "p6": ShapeSpec(channels=8, stride=64)}
    teacher = {k: ShapeSpec(channels=12, stride=v.stride) for k, v in shapes.items()}
    decoder = MKDDecoder(width=16, depth=1, num_heads=2, patch_size=32, sam_norm=True)
    decoder.build(shapes, teacher)
    assert set(decoder.sam_norm) == set(shapes)
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(128, 128)], [0], step=0)
    student = _features(8, 128, 128, batch=1, levels={k: v.stride for k, v in shapes.items()})
    student = {k: 50 * v + 7 for k, v in student.items()}  # far from unit scale
    seen = []
    hook = decoder.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    out = decoder(student, mask)
    hook.remove()
    tokens = torch.split(seen[0], [16, 16, 16], dim=1)  # 4x4 tokens per level at 128 px
    for i, level in enumerate(decoder.levels):
        pos = _sincos_position_embedding(4, 4, 16) + decoder.level_embed[i]
        content = tokens[i][0] - pos
        visible = mask.at(4, 4, 32)[0, 0].flatten().bool()
        # Visible tokens: zero mean, unit variance over channels (LayerNorm's initial affine).
        assert content[visible].mean(dim=1).abs().max() < 1e-4
        assert content[visible].var(dim=1, unbiased=False).sub(1).abs().max() < 1e-2
        torch.testing.assert_close(content[~visible],  # hidden: the mask token, untouched
                                   decoder.mask_tokens[level].expand_as(content[~visible]))
        assert out[level].shape == (1, 12, *student[level].shape[-2:])
    sum(v.sum() for v in out.values()).backward()
    assert all(norm.weight.grad.abs().sum() > 0 for norm in decoder.sam_norm.values())


def test_residual_adapter_adds_a_per_position_1x1_path_to_the_decoder_output():
    shapes = {"p3": ShapeSpec(channels=8, stride=8), "p4": ShapeSpec(channels=8, stride=16)}
    teacher = {k: ShapeSpec(channels=12, stride=v.stride) for k, v in shapes.items()}
    plain = MKDDecoder(width=16, depth=1, num_heads=2, patch_size=32).build(shapes, teacher)
    torch.manual_seed(0)
    residual = MKDDecoder(width=16, depth=1, num_heads=2, patch_size=32,
                          residual_adapter=True)
    residual.build(shapes, teacher)
    residual.load_state_dict(plain.state_dict(), strict=False)  # the same decoder, plus 1x1s
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(64, 64)], [0], step=0)
    student = _features(8, 64, 64, batch=1, levels={"p3": 8, "p4": 16})
    a, b = plain(student, mask), residual(student, mask)
    for level, x in student.items():
        conv = residual.residual[level]
        assert conv.kernel_size == (1, 1) and (conv.in_channels, conv.out_channels) == (8, 12)
        torch.testing.assert_close(b[level], a[level] + conv(x))
    assert plain.residual is None


def test_student_gradient_scale_scales_only_the_gradient_into_the_student():
    """Same losses, same gradients for the decoder and the global loss's blocks; the student's
    features get ``student_gradient_scale`` times their gradient."""
    shapes = {"p3": ShapeSpec(channels=8, stride=8), "p4": ShapeSpec(channels=8, stride=16)}
    teacher_shapes = {k: ShapeSpec(channels=12, stride=v.stride) for k, v in shapes.items()}
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(64, 64)], [0], step=0)
    student = _features(8, 64, 64, levels={"p3": 8, "p4": 16})
    teacher = _features(12, 64, 64, levels={"p3": 8, "p4": 16})
    results = []
    for scale in (1.0, 3.0):
        torch.manual_seed(0)
        distiller = MKDDistiller(decoder=MKDDecoder(width=16, depth=1, num_heads=2, patch_size=32),
                                 feature_loss=FeatureLoss(), global_loss=GlobalLoss(),
                                 student_gradient_scale=scale).build(shapes, teacher_shapes)
        inputs = {k: v.clone().requires_grad_() for k, v in student.items()}
        with EventStorage(0):
            losses = distiller(inputs, teacher, DistillContext(image_size=(64, 64), mask=mask))
        sum(losses.values()).backward()
        results.append((losses, {k: v.grad for k, v in inputs.items()},
                        {n: p.grad.clone() for n, p in distiller.named_parameters()
                         if p.grad is not None}))
    (losses, into_student, own), (scaled_losses, scaled_into_student, scaled_own) = results
    for key, value in losses.items():
        torch.testing.assert_close(scaled_losses[key], value)
    for level, grad in into_student.items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(scaled_into_student[level], 3.0 * grad)
    assert own.keys() == scaled_own.keys() and own
    for name, grad in own.items():
        torch.testing.assert_close(scaled_own[name], grad)
    with pytest.raises(ValueError, match="student_gradient_scale=-1 must be >= 0"):
        MKDDistiller(decoder=MKDDecoder(), feature_loss=FeatureLoss(), student_gradient_scale=-1)


def test_the_fine_token_variant_is_mkd_with_8_pixel_tokens_and_nothing_else():
    shapes = Path(__file__).resolve().parents[2] / "configs" / "shapes"
    base, variant = (LazyConfig.load(str(shapes / name)) for name in ("mkd.py", "mkd_tokens8.py"))
    assert variant.model.distiller.decoder.token_stride == 8
    assert base.model.distiller.decoder.token_stride is None
    for cfg in (base, variant):
        cfg.model.distiller.decoder.token_stride = None
        cfg.train.output_dir = ""
    assert OmegaConf.to_container(variant) == OmegaConf.to_container(base)
