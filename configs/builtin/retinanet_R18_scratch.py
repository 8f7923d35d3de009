"""RetinaNet R18-FPN trained from scratch on the built-in digits dataset, on CPU.

The R50 config with a ResNet-18 backbone: the small, fast detector of the demo and the tests.
"""
from .retinanet_R50_scratch import (  # noqa: F401  a LazyConfig is its globals
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.backbone.bottom_up.stages.depth = 18
# BasicBlock (used for depth < 50) has no 1x1 convolution to put the stride in.
del model.backbone.bottom_up.stages.stride_in_1x1
model.backbone.top_block.in_channels = 512  # res5 of R18 has 512 channels, not 2048

train.output_dir = "./output/retinanet_R18_scratch"
