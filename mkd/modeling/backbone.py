"""Backbones for training from scratch, where no ImageNet weights exist (the built-in dataset).

Without pre-trained weights a deep ResNet starts as a deep random function, and learns more slowly
per iteration than a shallow one. Zero-initialising the last normalisation of every residual
branch (Goyal et al., "Accurate, Large Minibatch SGD", §5.1; torchvision's ``zero_init_residual``)
makes every block start as the identity, so a deep network starts as shallow as its stem.
Detectron2 has this line commented out in its blocks; here it is an option.
"""
import torch.nn as nn
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet


class ScratchResNet(ResNet):
    """Detectron2's ``ResNet`` with ``zero_init_residual``; the same modules and parameter names,
    so its checkpoints load into a plain ``ResNet``."""

    def __init__(self, *args, zero_init_residual: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not zero_init_residual:
            return
        for block in self.modules():
            last = {BasicBlock: "conv2", BottleneckBlock: "conv3"}.get(type(block))
            if last is None:
                continue
            norm = getattr(block, last).norm
            if norm is None or not hasattr(norm, "weight"):
                raise ValueError(
                    f"zero_init_residual needs a normalisation with a scale in every residual "
                    f"block, got {norm!r}: set the stages' norm (e.g. 'BN') or "
                    f"zero_init_residual=False")
            nn.init.zeros_(norm.weight)
