"""Detectron2 registration of the built-in datasets, generated on first use.

The built-in datasets ("shapes", the learnable CPU proxy, and "digits", its harder variant) are
generated on first use, so configs that train on them work on a fresh machine without downloads:
their metadata's ``prepare`` generates them when ``mkd.engine.datasets`` checks a run's data.
"""
import functools
import json
import logging
import os
import time

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from iopath.common.file_io import file_lock

from mkd.engine.datasets import check_writable

from . import digits, semantic, shapes
from .coco_writer import SPLITS, split_paths

logger = logging.getLogger(__name__)

# Generator module of each built-in dataset: its CATEGORY_NAMES, DEFAULT_* sizes,
# GENERATOR_VERSION and generate_split. Dataset `key` registers as mkd_<key>_{train,val}.
# "shapes_seed1" is a second instance of the shapes proxy (same generator, another seed): a
# verdict on one instance may hold for that dataset only.
GENERATORS = {"shapes": shapes, "digits": digits, "shapes_seed1": shapes}
# The generator seed of each built-in dataset (0 where not listed).
GENERATOR_SEEDS = {"shapes_seed1": 1}
BUILTIN_DATASETS = {f"mkd_{key}_{split}": (key, split) for key in GENERATORS for split in SPLITS}
# Built-in datasets that also register per-pixel labels, as mkd_<key>_sem_seg_{train,val}.
SEM_SEG_DATASETS = ("shapes",)
BUILTIN_DATASETS.update({semantic.sem_seg_name(key, split): (key, split)
                         for key in SEM_SEG_DATASETS for split in SPLITS})


def builtin_root(dataset="digits"):
    """Where a built-in dataset lives: mkd_<dataset> under $MKD_DATASETS, else under
    $DETECTRON2_DATASETS, else under ./datasets."""
    parent = os.environ.get("MKD_DATASETS", os.environ.get("DETECTRON2_DATASETS", "datasets"))
    return os.path.join(parent, f"mkd_{dataset}")


def register_builtin(root=None, dataset="digits"):
    """Register `mkd_<dataset>_{train,val}` under `root` (default: `builtin_root(dataset)`),
    and `mkd_<dataset>_sem_seg_{train,val}` for the datasets in `SEM_SEG_DATASETS`.

    Safe to call repeatedly; calling it with another root re-registers the names there.
    """
    category_names = _generator(dataset).CATEGORY_NAMES
    root = root or builtin_root(dataset)
    for split in SPLITS:
        name = f"mkd_{dataset}_{split}"
        json_file, image_root = split_paths(root, split)
        if name in DatasetCatalog.list():
            if MetadataCatalog.get(name).get("json_file") == json_file:
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, _builtin_loader(name, dataset, root, json_file, image_root))
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=list(category_names),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(category_names))},
            dataset_root=root,
            # mkd.engine.datasets' checks prepare the split (generate it) instead of reading it.
            prepare=functools.partial(ensure_builtin_dataset, root, dataset=dataset),
        )
    if dataset in SEM_SEG_DATASETS:
        semantic.register_sem_seg(root, dataset, category_names,
                                  functools.partial(ensure_builtin_dataset, root, dataset=dataset))


def register_all():
    """Register every built-in dataset not registered yet at its default root (a registration
    elsewhere, e.g. `register_builtin(root)` of a test or a script, stays)."""
    registered = set(DatasetCatalog.list())
    for dataset in GENERATORS:
        if f"mkd_{dataset}_{SPLITS[0]}" not in registered:
            register_builtin(dataset=dataset)


def ensure_builtin_dataset(root=None, seed=None, dataset="digits"):
    """Generate the default splits of `dataset` that are missing under `root` (from `seed`,
    default the dataset's own, `GENERATOR_SEEDS`); a no-op when both exist."""
    generator = _generator(dataset)
    seed = GENERATOR_SEEDS.get(dataset, 0) if seed is None else seed
    root = root or builtin_root(dataset)
    sizes = {"train": generator.DEFAULT_NUM_TRAIN, "val": generator.DEFAULT_NUM_VAL}
    for split, num_images in sizes.items():
        json_file, image_root = split_paths(root, split)
        if _split_exists(json_file, image_root, generator.GENERATOR_VERSION):
            continue
        check_writable(root)
        # Several processes (e.g. distributed ranks) may get here at once: one generates.
        with file_lock(json_file):
            if _split_exists(json_file, image_root, generator.GENERATOR_VERSION):
                continue
            logger.info(
                "Built-in dataset split %r not found under %s; generating %d images (seed %d)",
                split,
                root,
                num_images,
                seed,
            )
            start = time.perf_counter()
            generator.generate_split(root, split, num_images, generator.DEFAULT_IMAGE_SIZE, seed)
            logger.info("Generated %s in %.1f s", json_file, time.perf_counter() - start)


def _generator(dataset):
    try:
        return GENERATORS[dataset]
    except KeyError:
        raise ValueError(
            f"unknown built-in dataset {dataset!r}: use one of {', '.join(GENERATORS)}"
        ) from None


def _split_exists(json_file, image_root, generator_version):
    """True when the split is on disk and was written by this generator version."""
    if not (os.path.isfile(json_file) and os.path.isdir(image_root)):
        return False
    with open(json_file) as f:
        version = json.load(f).get("info", {}).get("version")
    if version != generator_version:
        logger.warning(
            "%s was written by generator version %s, this is version %s: regenerating it",
            json_file,
            version,
            generator_version,
        )
        return False
    return True


def _builtin_loader(name, dataset, root, json_file, image_root):
    """DatasetCatalog loader that generates the split first if it is missing."""

    def load():
        ensure_builtin_dataset(root, dataset=dataset)
        return load_coco_json(json_file, image_root, name)

    return load
