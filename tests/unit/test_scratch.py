import pytest
import torch
from detectron2.config import instantiate
from detectron2.modeling.backbone.resnet import ResNet

from mkd.modeling.backbone import ScratchResNet
from tests.helpers import model_config


def bottom_up(depth, **options):
    cfg = model_config(depth=depth).backbone.bottom_up
    cfg._target_ = ScratchResNet
    cfg.update(options)
    return instantiate(cfg)


@pytest.mark.parametrize("depth,last", [(18, "conv2"), (50, "conv3")])
def test_zero_init_residual_makes_every_block_start_as_the_identity(depth, last):
    torch.manual_seed(0)
    net = bottom_up(depth)
    blocks = [b for stage in net.stages for b in stage]
    assert all(getattr(b, last).norm.weight.abs().sum() == 0 for b in blocks)
    assert all(b.conv1.norm.weight.eq(1).all() for b in blocks)  # only the last norm
    # A block whose shortcut is the identity computes relu(x + 0).
    x = torch.randn(2, 64 if depth == 18 else 256, 8, 8)
    block = net.res2[1]
    assert torch.equal(block(x), torch.relu(x))


def test_checkpoints_load_into_a_plain_resnet():
    scratch = bottom_up(18)
    plain_cfg = model_config(depth=18).backbone.bottom_up
    plain = instantiate(plain_cfg)
    assert type(plain) is ResNet
    assert plain.load_state_dict(scratch.state_dict()) is not None  # strict: same keys/shapes
    off = bottom_up(18, zero_init_residual=False)
    assert off.res2[0].conv2.norm.weight.eq(1).all()


def test_a_block_without_normalisation_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="zero_init_residual=False"):
        bottom_up(18, stages=dict(model_config(depth=18).backbone.bottom_up.stages, norm=""))
