"""The built-in dataset: a generated COCO-format instance dataset, registered with Detectron2.

Importing this package registers `mkd_digits_train` / `mkd_digits_val`; images are generated
only when a dataset is first loaded (or by `tools/make_dataset.py`).
"""
from .builtin import (
    BUILTIN_DATASETS,
    builtin_root,
    check_datasets_available,
    ensure_builtin_dataset,
    register_builtin,
)
from .synthetic import (
    CATEGORY_NAMES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    SPLITS,
    generate_dataset,
    generate_split,
    mask_to_polygons,
    split_paths,
)

__all__ = [
    "BUILTIN_DATASETS",
    "CATEGORY_NAMES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "SPLITS",
    "builtin_root",
    "check_datasets_available",
    "ensure_builtin_dataset",
    "generate_dataset",
    "generate_split",
    "mask_to_polygons",
    "register_builtin",
    "split_paths",
]

register_builtin()
