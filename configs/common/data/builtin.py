"""Data loaders for the built-in digits dataset, sized for its 256-px images and CPU training.

Detectron2's COCO loader config with the names, augmentations and loader sizes edited.
"""
import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from mkd_bench.datasets import register_all

# The built-in datasets (mkd_digits_*, mkd_shapes_*) register with the config that reads them.
register_all()

dataloader = model_zoo.get_config("common/data/coco.py").dataloader

dataloader.train.dataset.names = "mkd_digits_train"
# Multi-scale training around the 160-px test size. No flip: a mirrored digit is not that digit.
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(
        short_edge_length=(128, 144, 160, 176, 192), sample_style="choice", max_size=320
    ),
]
dataloader.train.mapper.use_instance_mask = False
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 2

dataloader.test.dataset.names = "mkd_digits_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=160, max_size=320),
]
dataloader.test.num_workers = 2

# The fast COCOeval needs Detectron2's C++ ops, which a pure-Python install lacks.
dataloader.evaluator.use_fast_impl = False
dataloader.evaluator.output_dir = "${...train.output_dir}/inference"
