import copy

import pytest
import torch
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from torch import nn
from torch.nn import functional as F

from mkd.modeling.masking import MaskedConvolutions, PatchMasker
from tests import helpers
from tests.helpers import make_mkd


def test_exact_ratio_per_image_and_odd_grid_sizes():
    masker = PatchMasker(patch_size=32, mask_ratio=0.5)
    sizes = [(65, 97), (160, 160), (33, 31)]
    mask = masker(sizes, image_keys=[1, 2, 3], step=0)
    assert mask.grid.shape == (3, 5, 5)
    for i, (h, w) in enumerate(sizes):
        gh, gw = -(-h // 32), -(-w // 32)
        assert (gh, gw) == [(3, 4), (5, 5), (2, 1)][i]
        inside = mask.grid[i, :gh, :gw]
        assert int((inside == 0).sum()) == round(0.5 * gh * gw)
        assert mask.grid[i].sum() == inside.sum()  # nothing visible outside the image


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75])
def test_ratio_is_exact_for_every_image(ratio):
    mask = PatchMasker(patch_size=16, mask_ratio=ratio)([(128, 96)] * 4, [0, 1, 2, 3], step=5)
    hidden = (mask.grid == 0).flatten(1).sum(1)
    assert hidden.tolist() == [round(ratio * 8 * 6)] * 4


def test_masks_are_a_function_of_seed_step_and_image():
    masker = PatchMasker(patch_size=8, mask_ratio=0.5, seed=3)
    draw = lambda step, keys: masker([(64, 64)] * 2, keys, step).grid  # noqa: E731
    assert torch.equal(draw(7, [1, 2]), draw(7, [1, 2]))
    assert not torch.equal(draw(7, [1, 2]), draw(8, [1, 2]))
    assert not torch.equal(draw(7, [1, 2])[0], draw(7, [1, 2])[1])
    other_seed = PatchMasker(patch_size=8, mask_ratio=0.5, seed=4)([(64, 64)] * 2, [1, 2], 7)
    assert not torch.equal(draw(7, [1, 2]), other_seed.grid)


@pytest.mark.parametrize("stride", [1, 2, 4, 8, 16, 32])
def test_mask_is_aligned_at_every_stride(stride):
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(128, 160)], [0], step=0)
    at = mask.at(128 // stride, 160 // stride, stride)
    k = 32 // stride
    expected = mask.grid.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2)
    assert at.shape == (1, 1, 128 // stride, 160 // stride)
    assert torch.equal(at[:, 0], expected)


def test_padding_is_hidden():
    # Two images padded into one 96 x 128 batch: the smaller one's padding is never visible.
    mask = PatchMasker(patch_size=32, mask_ratio=0.25)([(96, 128), (40, 70)], [0, 1], step=0)
    mask.padded_size = (96, 128)
    full = mask.at(96, 128, 1)
    assert full[1, 0, 64:, :].sum() == 0 and full[1, 0, :, 96:].sum() == 0
    assert full[1, 0, :64, :96].sum() > 0
    feature = torch.zeros(2, 1, 12, 16)  # a stride-8 map of the padded batch
    assert torch.equal(mask.at_feature(feature), mask.at(12, 16, 8))


def _area_reference(mask, stride):
    """Each position's visible share of the stride x stride pixels it sees, from the pixel-level
    mask zero-padded (hidden) to a multiple of the stride."""
    pixels = mask.at(*mask.padded_size, 1)
    height, width = pixels.shape[-2:]
    pixels = F.pad(pixels, (0, -width % stride, 0, -height % stride))
    return F.avg_pool2d(pixels, stride)


@pytest.mark.parametrize("stride", [8, 32, 64, 128])
def test_every_level_masks_exactly_the_patches_its_positions_see(stride):
    # A non-square batch whose P6/P7 maps are ceil-sized (2 x 3 and 1 x 2), not H/s x W/s.
    mask = PatchMasker(patch_size=32, mask_ratio=0.5, seed=0)([(96, 160), (64, 90)], [0, 1], 0)
    mask.padded_size = (96, 160)
    feature = torch.zeros(2, 4, -(-96 // stride), -(-160 // stride))
    expected = _area_reference(mask, stride)
    assert torch.equal(mask.at_feature(feature), expected)  # the stride inferred per axis
    assert torch.equal(mask.at_feature(feature, stride), expected)
    if stride <= 32:  # a position inside one patch is visible or hidden, nothing between
        assert set(expected.unique().tolist()) == {0.0, 1.0}


def test_a_map_that_no_power_of_two_stride_explains_needs_its_stride():
    mask = PatchMasker(patch_size=32, mask_ratio=0.5, seed=0)([(96, 160)], [0], 0)
    mask.padded_size = (96, 160)
    with pytest.raises(ValueError, match="pass the map's stride to PatchMask.at_feature"):
        mask.at_feature(torch.zeros(1, 1, 5, 5))


def _draw(masker, step=3, keys=(0, 1)):
    return masker([(128, 128)] * len(keys), list(keys), step).grid


def test_the_mask_seed_follows_the_run_seed_and_can_be_pinned():
    seed_all_rng(1)  # as default_setup does with train.seed=1 on rank 0
    first = PatchMasker()
    seed_all_rng(2)
    second = PatchMasker()
    seed_all_rng(1)
    again = PatchMasker()
    assert first.seed == again.seed != second.seed
    assert torch.equal(_draw(first), _draw(again))
    assert not torch.equal(_draw(first), _draw(second))
    seed_all_rng(2)
    assert PatchMasker(seed=5).seed == PatchMasker(seed=5).seed == 5


def test_ranks_draw_different_masks_for_the_same_image_key(monkeypatch):
    masker = PatchMasker(seed=7)
    rank0 = _draw(masker)
    monkeypatch.setattr(comm, "get_rank", lambda: 1)
    rank1 = _draw(masker)
    assert not torch.equal(rank0[0], rank1[0]) and not torch.equal(rank0[1], rank1[1])


def test_the_mask_seed_is_saved_and_restored_with_the_model(tmp_path):
    original = make_mkd(tmp_path, masker=PatchMasker(seed=11))
    restored = make_mkd(tmp_path, masker=PatchMasker(seed=22))
    assert int(original.mask_seed) == 11 and "mask_seed" in original.state_dict()
    batch = helpers.batch()
    for model in (original, restored):
        model.mask_step.fill_(4)
    assert not torch.equal(original.draw_masks(batch).grid, restored.draw_masks(batch).grid)
    restored.load_state_dict(original.state_dict())  # what --resume does
    assert int(restored.mask_seed) == 11 and int(restored.mask_step) == 5
    assert torch.equal(original.draw_masks(batch).grid, restored.draw_masks(batch).grid)


def test_bad_mask_ratio_and_patch_size():
    for ratio in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="mask_ratio must lie in"):
            PatchMasker(mask_ratio=ratio)
    with pytest.raises(ValueError, match="patch_size"):
        PatchMasker(patch_size=0)


def _backbone(depth):
    backbone = helpers.build("retinanet", depth=depth).backbone.eval()
    return backbone


@pytest.mark.parametrize("depth", [18, 50])  # BasicBlock and Bottleneck
def test_hidden_pixels_change_no_student_feature(depth):
    backbone = _backbone(depth)
    masked = MaskedConvolutions(backbone.bottom_up)
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(96, 128)], [0], step=1)
    image = torch.randn(1, 3, 96, 128)
    changed = image + 5 * torch.randn_like(image) * (1 - mask.at(96, 128, 1))
    with torch.no_grad(), masked.active(mask):
        a, b = backbone(image), backbone(changed)
    for level in a:
        assert torch.equal(a[level], b[level]), level
    with torch.no_grad():  # sanity: the same change is visible without masking
        assert not torch.allclose(backbone(image)["p3"], backbone(changed)["p3"])


class _ExplicitlyMaskedConv(nn.Module):
    """Reference: zeroes the conv input with the grid upsampled by nearest repetition."""

    def __init__(self, conv, grid, image_height):
        super().__init__()
        self.conv, self.grid, self.image_height = conv, grid, image_height

    def forward(self, x):
        k = 32 // (self.image_height // x.shape[-2])
        m = self.grid.repeat_interleave(k, 1).repeat_interleave(k, 2).unsqueeze(1)
        return self.conv(x * m)


def _replace_convs(module, grid, image_height):
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(module, name, _ExplicitlyMaskedConv(child, grid, image_height))
        else:
            _replace_convs(child, grid, image_height)


@pytest.mark.parametrize("depth", [18, 50])
def test_masked_features_equal_explicit_reference(depth):
    backbone = _backbone(depth)
    reference = copy.deepcopy(backbone.bottom_up)
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(96, 128)] * 2, [0, 1], step=2)
    _replace_convs(reference, mask.grid, 96)
    masked = MaskedConvolutions(backbone.bottom_up)
    image = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        with masked.active(mask):
            ours = backbone.bottom_up(image)
        expected = reference(image)
        plain = backbone.bottom_up(image)
    for name, feature in expected.items():
        visible = mask.at_feature(feature).bool().expand_as(feature)
        torch.testing.assert_close(ours[name][visible], feature[visible], rtol=0, atol=1e-5)
        assert not torch.allclose(plain[name][visible], feature[visible], atol=1e-3)


def test_an_image_without_an_id_is_keyed_by_its_file_name_then_by_its_position():
    from mkd.modeling.meta_arch import image_key

    by_name = [image_key({"file_name": f"/data/{n}.png"}, 0) for n in ("a", "b")]
    assert by_name[0] != by_name[1]  # different images, same position: different masks
    assert image_key({"file_name": "/data/a.png"}, 5) == by_name[0]  # a function of the image
    assert image_key({"image_id": 7, "file_name": "/data/a.png"}, 0) == 7
    assert image_key({}, 3) == 3


def _conv_bn(momentum=0.1):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=momentum))
    nn.init.normal_(module[1].weight)
    nn.init.normal_(module[1].bias)
    return module.train()


def _mask_and_image():
    mask = PatchMasker(patch_size=32, mask_ratio=0.5)([(64, 96)] * 2, [0, 1], step=3)
    mask.padded_size = (64, 96)
    return mask, torch.randn(2, 3, 64, 96)


def test_sparse_bn_statistics_are_those_of_the_visible_positions_alone():
    module = _conv_bn()
    mask, image = _mask_and_image()
    visible = mask.at(64, 96, 1)
    masked = MaskedConvolutions(module, norm_statistics="visible")
    with masked.active(mask):
        ours = module(image)
    conv, norm = module
    with torch.no_grad():
        z = conv(image * visible)
        picked = z.permute(1, 0, 2, 3)[:, visible[:, 0].bool()]  # (C, visible positions)
        mean, var = picked.mean(dim=1), picked.var(dim=1, unbiased=False)
        expected = ((z - mean[:, None, None]) / torch.sqrt(var[:, None, None] + norm.eps)
                    * norm.weight[:, None, None] + norm.bias[:, None, None])
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
        # Running statistics learn the visible positions' statistics, unbiased like BN's.
        torch.testing.assert_close(norm.running_mean, 0.1 * mean, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * picked.var(dim=1),
                                   rtol=1e-4, atol=1e-6)
        # Plain BN over every position would differ: the hidden zeros shift its mean.
        plain = norm(z)
        assert not torch.allclose(plain, expected, atol=1e-2)
    ours.sum().backward()  # and the gradient flows through the visible statistics
    assert conv.weight.grad.abs().sum() > 0


def test_sparse_bn_leaves_the_clean_pass_and_inference_unchanged():
    module, reference = _conv_bn(), _conv_bn()
    mask, image = _mask_and_image()
    masked = MaskedConvolutions(module, norm_statistics="visible")
    with masked.active(mask):
        module(image)
    reference[1].load_state_dict(module[1].state_dict())
    assert all("forward" not in vars(m) for m in module)  # the masked BN forward is undone
    torch.testing.assert_close(module(image), reference(image))  # clean training pass: plain BN
    module.eval(), reference.eval()
    with masked.active(mask):  # evaluation mode: running statistics, masked or not
        masked_eval = module(image)
    torch.testing.assert_close(masked_eval, reference(image * mask.at(64, 96, 1)))
    torch.testing.assert_close(module(image), reference(image))


def test_clean_bn_statistics_normalise_the_masked_pass_with_the_clean_pass_ones():
    module = _conv_bn(momentum=0.0)
    mask, image = _mask_and_image()
    masked = MaskedConvolutions(module, norm_statistics="clean")
    with pytest.raises(RuntimeError, match="task_pass='clean'"):
        with masked.active(mask):
            module(image)
    module(image)  # the clean pass records its statistics
    conv, norm = module
    with torch.no_grad():
        clean = conv(image)
        mean, var = clean.mean(dim=(0, 2, 3)), clean.var(dim=(0, 2, 3), unbiased=False)
        z = conv(image * mask.at(64, 96, 1))
        expected = ((z - mean[:, None, None]) / torch.sqrt(var[:, None, None] + norm.eps)
                    * norm.weight[:, None, None] + norm.bias[:, None, None])
    with masked.active(mask):
        torch.testing.assert_close(module(image), expected, rtol=1e-4, atol=1e-4)


def test_batch_norm_statistics_keep_plain_bn_in_the_masked_pass():
    module, reference = _conv_bn(), _conv_bn()
    mask, image = _mask_and_image()
    masked = MaskedConvolutions(module, norm_statistics="batch")
    with masked.active(mask):
        ours = module(image)
    torch.testing.assert_close(ours, reference(image * mask.at(64, 96, 1)))


def test_unknown_norm_statistics_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="visible"):
        MaskedConvolutions(_conv_bn(), norm_statistics="sparse")


def test_sparse_bn_running_update_keeps_an_earlier_pass_differentiable():
    """A clean pass, then a masked pass that updates the running statistics, then backward
    through both (the diagnosis does this): BN's saved buffers must keep their version."""
    module = _conv_bn()
    mask, image = _mask_and_image()
    masked = MaskedConvolutions(module, norm_statistics="visible")
    clean = module(image)
    with masked.active(mask):
        hidden_half = module(image)
    (clean.sum() + hidden_half.pow(2).sum()).backward()
    assert module[0].weight.grad.abs().sum() > 0
