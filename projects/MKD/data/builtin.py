"""Detectron2 registration of the built-in dataset, and checks that datasets exist on disk.

The built-in dataset is generated on first use, so configs that train on it work on a fresh
machine without downloads. Datasets that cannot be generated (COCO) get a clear error up front
instead of a crash deep inside the data loader.
"""
import json
import logging
import os
import time

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from iopath.common.file_io import file_lock

from .synthetic import (
    CATEGORY_NAMES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    GENERATOR_VERSION,
    check_writable,
    generate_split,
    split_paths,
)

logger = logging.getLogger(__name__)

BUILTIN_DATASETS = {"mkd_digits_train": "train", "mkd_digits_val": "val"}
_DEFAULT_SPLIT_SIZES = {"train": DEFAULT_NUM_TRAIN, "val": DEFAULT_NUM_VAL}


def builtin_root():
    """Where the built-in dataset lives: $MKD_DATASETS, else $DETECTRON2_DATASETS/mkd_digits."""
    detectron2_root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    return os.environ.get("MKD_DATASETS", os.path.join(detectron2_root, "mkd_digits"))


def register_builtin(root=None):
    """Register `mkd_digits_{train,val}` under `root` (default: `builtin_root()`).

    Safe to call repeatedly; calling it with another root re-registers the names there.
    """
    root = root or builtin_root()
    for name, split in BUILTIN_DATASETS.items():
        json_file, image_root = split_paths(root, split)
        if name in DatasetCatalog.list():
            if MetadataCatalog.get(name).get("json_file") == json_file:
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, _builtin_loader(name, root, json_file, image_root))
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=list(CATEGORY_NAMES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(CATEGORY_NAMES))},
            dataset_root=root,
        )


def ensure_builtin_dataset(root=None, seed=0):
    """Generate the default splits that are missing under `root`; a no-op when both exist."""
    root = root or builtin_root()
    for split, num_images in _DEFAULT_SPLIT_SIZES.items():
        json_file, image_root = split_paths(root, split)
        if _split_exists(json_file, image_root):
            continue
        check_writable(root)
        # Several processes (e.g. distributed ranks) may get here at once: one generates.
        with file_lock(json_file):
            if _split_exists(json_file, image_root):
                continue
            logger.info(
                "Built-in dataset split %r not found under %s; generating %d images (seed %d)",
                split,
                root,
                num_images,
                seed,
            )
            start = time.perf_counter()
            generate_split(root, split, num_images, DEFAULT_IMAGE_SIZE, seed)
            logger.info("Generated %s in %.1f s", json_file, time.perf_counter() - start)


def check_datasets_available(names):
    """Make sure every dataset in `names` can be loaded: generate built-in ones if missing,
    raise FileNotFoundError naming the expected files for others (e.g. COCO)."""
    if isinstance(names, str):
        names = [names]
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            raise KeyError(
                f"dataset {name!r} is not registered. Use a built-in name "
                f"({', '.join(BUILTIN_DATASETS)}), one of Detectron2's (e.g. coco_2017_train), "
                "or register your own COCO-format data first with "
                "detectron2.data.datasets.register_coco_instances(name, {}, json_file, image_root)"
            )
        metadata = MetadataCatalog.get(name)
        if name in BUILTIN_DATASETS:
            ensure_builtin_dataset(metadata.get("dataset_root"))
            continue
        expected = [metadata.get(key) for key in ("json_file", "image_root")]
        missing = [path for path in expected if path and not os.path.exists(path)]
        if missing:
            raise FileNotFoundError(_missing_files_message(name, missing))


def _split_exists(json_file, image_root):
    """True when the split is on disk and was written by this generator version."""
    if not (os.path.isfile(json_file) and os.path.isdir(image_root)):
        return False
    with open(json_file) as f:
        version = json.load(f).get("info", {}).get("version")
    if version != GENERATOR_VERSION:
        logger.warning(
            "%s was written by generator version %s, this is version %s: regenerating it",
            json_file,
            version,
            GENERATOR_VERSION,
        )
        return False
    return True


def _builtin_loader(name, root, json_file, image_root):
    """DatasetCatalog loader that generates the split first if it is missing."""

    def load():
        ensure_builtin_dataset(root)
        return load_coco_json(json_file, image_root, name)

    return load


def _missing_files_message(name, missing):
    detectron2_root = os.environ.get("DETECTRON2_DATASETS")
    current = repr(detectron2_root) if detectron2_root else "unset (defaults to ./datasets)"
    return (
        f"dataset {name!r} is missing {' and '.join(repr(path) for path in missing)}. "
        "Detectron2 looks for its built-in datasets under $DETECTRON2_DATASETS "
        f"(currently {current}; it is read when detectron2.data is first imported), e.g. COCO as "
        "$DETECTRON2_DATASETS/coco/{annotations/instances_train2017.json,train2017/,val2017/}. "
        "Download the data there, or train on the built-in dataset instead (generated on first "
        f"use under {builtin_root()!r}): use a config from configs/builtin/, or override "
        "dataloader.train.dataset.names=mkd_digits_train "
        "dataloader.test.dataset.names=mkd_digits_val"
    )
