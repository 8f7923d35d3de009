"""Data loaders for the built-in shapes dataset (the CPU proxy), sized for its 128-px images.

The digits loaders (builtin.py) with the names and sizes edited: train and test near the
generated size, since upscaling costs CPU time and shows nothing new.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .builtin import dataloader

dataloader.train.dataset.names = "mkd_shapes_train"
# Every class is mirror-symmetric up to its small random rotation, so flipping is free data.
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(112, 128, 144), sample_style="choice", max_size=256),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.dataset.names = "mkd_shapes_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=128, max_size=256),
]
