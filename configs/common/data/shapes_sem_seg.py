"""Data loaders for the per-pixel labels of the built-in shapes dataset (mkd_shapes_sem_seg_*).

The shapes detection loaders (shapes.py) on the semantic names, evaluated by Detectron2's
SemSegEvaluator (mIoU over background and the 8 classes; label 255 is ignored).
"""
from detectron2.config import LazyCall as L
from detectron2.evaluation import SemSegEvaluator

from .shapes import dataloader

dataloader.train.dataset.names = "mkd_shapes_sem_seg_train"
dataloader.test.dataset.names = "mkd_shapes_sem_seg_val"
dataloader.evaluator = L(SemSegEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference",
)
