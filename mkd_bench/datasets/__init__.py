"""The built-in datasets: generated COCO-format instance datasets, registered with Detectron2.

`register_all()` (called by configs/common/data/builtin.py, so by every config that reads them)
registers `mkd_shapes_{train,val}` (the CPU proxy, shapes.py),
`mkd_shapes_seed1_{train,val}` (its second instance, generated from another seed),
`mkd_digits_{train,val}` (a harder variant, digits.py) and the shapes' per-pixel labels,
`mkd_shapes_sem_seg_{train,val}` (semantic.py); images and labels are generated only when a
dataset is first loaded (or by `tools/make_dataset.py`), which needs the `builtin` extra (scipy,
scikit-learn, scikit-image); registering and training on generated data do not. Both generators
write their splits with coco_writer.py. `generate_dataset` and `generate_split` here are the
digits' (`GENERATORS[key]` has each dataset's).
"""
from . import coco_writer, digits, semantic, shapes
from .builtin import (
    BUILTIN_DATASETS,
    GENERATOR_SEEDS,
    GENERATORS,
    SEM_SEG_DATASETS,
    builtin_root,
    ensure_builtin_dataset,
    register_all,
    register_builtin,
)
from .coco_writer import SPLITS, describe_split, mask_to_polygons, split_paths
from .digits import generate_dataset, generate_split

__all__ = [
    "BUILTIN_DATASETS",
    "GENERATORS",
    "GENERATOR_SEEDS",
    "SEM_SEG_DATASETS",
    "SPLITS",
    "builtin_root",
    "coco_writer",
    "describe_split",
    "digits",
    "ensure_builtin_dataset",
    "generate_dataset",
    "generate_split",
    "mask_to_polygons",
    "register_all",
    "register_builtin",
    "semantic",
    "shapes",
    "split_paths",
]
