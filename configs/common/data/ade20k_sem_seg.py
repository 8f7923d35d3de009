"""Data loaders for ADE20K semantic segmentation (150 classes) on Detectron2's own
registration, ``ade20k_sem_seg_{train,val}``.

The Cityscapes loaders (cityscapes_sem_seg.py) with ADE20K's usual recipe: short edge rescaled
to 256-1024, a 512x512 crop, flip, batch 16; test at a 512 short edge. Expects
$DETECTRON2_DATASETS/ADEChallengeData2016/{images,annotations_detectron2}/ (the latter written
by Detectron2's datasets/prepare_ade20k_sem_seg.py).
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .cityscapes_sem_seg import dataloader

dataloader.train.dataset.names = "ade20k_sem_seg_train"
dataloader.train.mapper.augmentations[0].update(
    short_edge_length=[256 + 64 * i for i in range(13)], max_size=2048)
dataloader.train.mapper.augmentations[1].crop_size = (512, 512)
dataloader.train.total_batch_size = 16

dataloader.test.dataset.names = "ade20k_sem_seg_val"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=512,
                                                                max_size=2048)]
