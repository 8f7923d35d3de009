"""MKD with the decoder's tokens every 8 pixels instead of one per 32-pixel mask patch, on the
shapes pair: this project's variant, not the paper's (whose SAM gives one token per patch).

At 128 px one token per patch leaves each FPN level 4x4 tokens; here P3 keeps one token per
position and every level gets 16x16 (docs/mkd_experiments.md, round 3: E3). Everything else
is ``mkd.py``.
"""
from .mkd import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.distiller.decoder.token_stride = 8
train.output_dir = "./output/shapes/mkd_tokens8"
