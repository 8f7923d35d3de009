"""Detectron2 registration of the built-in datasets, and checks that datasets exist and hold data.

The built-in datasets ("shapes", the learnable CPU proxy, and "digits", its harder variant) are
generated on first use, so configs that train on them work on a fresh machine without downloads.
Datasets that cannot be generated (COCO) get a clear error up front instead of a crash deep inside
the data loader.
"""
import functools
import json
import logging
import os
import time

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from iopath.common.file_io import file_lock

from . import semantic, shapes, synthetic
from .synthetic import SPLITS, check_writable, split_paths

logger = logging.getLogger(__name__)

# Generator module of each built-in dataset: its CATEGORY_NAMES, DEFAULT_* sizes,
# GENERATOR_VERSION and generate_split. Dataset `key` registers as mkd_<key>_{train,val}.
# "shapes_seed1" is a second instance of the shapes proxy (same generator, another seed): a
# verdict on one instance may hold for that dataset only.
GENERATORS = {"shapes": shapes, "digits": synthetic, "shapes_seed1": shapes}
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
        )
    if dataset in SEM_SEG_DATASETS:
        semantic.register_sem_seg(root, dataset, category_names,
                                  functools.partial(ensure_builtin_dataset, root, dataset=dataset))


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
            dataset, split = BUILTIN_DATASETS[name]
            ensure_builtin_dataset(metadata.get("dataset_root"), dataset=dataset)
            if metadata.get("evaluator_type") == "sem_seg":
                semantic.ensure_labels(metadata.get("dataset_root"), split)
            continue
        # COCO-style (json_file, image_root), Cityscapes (image_dir, gt_dir), ADE20K and other
        # load_sem_seg datasets (image_root, sem_seg_root)
        expected = [metadata.get(key) for key in
                    ("json_file", "image_root", "image_dir", "gt_dir", "sem_seg_root")]
        missing = [path for path in expected if path and not os.path.exists(path)]
        if missing:
            raise FileNotFoundError(_missing_files_message(name, missing))


def check_training_data(names):
    """Make sure every dataset in `names` is available (`check_datasets_available`) and holds an
    object to learn from. Detectron2 would stop inside its data loader with "Dataset 'x' is
    empty!" or "No valid data found in x." (every image dropped for having no annotation that is
    not a crowd region), naming neither the cause nor the fix. Reads each dataset once more than
    Detectron2 does (seconds for COCO); built-in datasets are generated non-empty and not read."""
    if isinstance(names, str):
        names = [names]
    check_datasets_available(names)
    for name in names:
        if name in BUILTIN_DATASETS:
            continue
        dicts = DatasetCatalog.get(name)
        if isinstance(dicts, torch.utils.data.Dataset):  # streamed: Detectron2 checks nothing
            continue
        json_file = MetadataCatalog.get(name).get("json_file")
        source = f"json_file {json_file!r}" if json_file else "its registered loader"
        other = ("or train on another dataset, e.g. dataloader.train.dataset.names="
                 "mkd_shapes_train (built in)")
        if not dicts:
            raise ValueError(
                f"dataset {name!r} has no images: {source} gives none. Register it with the "
                "annotation file that lists its images (detectron2.data.datasets."
                f"register_coco_instances(name, {{}}, json_file, image_root)), {other}"
            )
        if "annotations" in dicts[0] and not any(
                a.get("iscrowd", 0) == 0 for d in dicts for a in d["annotations"]):
            raise ValueError(
                f"dataset {name!r} has {len(dicts)} images but no object to train on: none has "
                f"an instance annotation that is not a crowd region ({source}), and Detectron2 "
                "trains only on images that have one. Register the split with its instance "
                "annotations (e.g. COCO's instances_train2017.json, not image_info_*.json), "
                f"{other}"
            )


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


# How Detectron2 expects the semantic segmentation datasets it registers, by name prefix.
_LAYOUTS = {
    "cityscapes": (
        "; Cityscapes as $DETECTRON2_DATASETS/cityscapes/{leftImg8bit,gtFine}/{train,val}/<city>/"
        " with *_leftImg8bit.png images and *_gtFine_{labelTrainIds,labelIds,instanceIds}.png + "
        "*_gtFine_polygons.json labels (labelTrainIds from cityscapesscripts' "
        "preparation/createTrainIdLabelImgs.py)"
    ),
    "ade20k": (
        "; ADE20K as $DETECTRON2_DATASETS/ADEChallengeData2016/{images,annotations_detectron2}/"
        "{training,validation}/ with .jpg images and .png labels (annotations_detectron2 is "
        "written by Detectron2's datasets/prepare_ade20k_sem_seg.py from annotations/)"
    ),
}


def _missing_files_message(name, missing):
    detectron2_root = os.environ.get("DETECTRON2_DATASETS")
    current = repr(detectron2_root) if detectron2_root else "unset (defaults to ./datasets)"
    return (
        f"dataset {name!r} is missing {' and '.join(repr(path) for path in missing)}. "
        "Detectron2 looks for its built-in datasets under $DETECTRON2_DATASETS "
        f"(currently {current}; it is read when detectron2.data is first imported), e.g. COCO as "
        "$DETECTRON2_DATASETS/coco/{annotations/instances_train2017.json,train2017/,val2017/}"
        f"{_LAYOUTS.get(name.split('_')[0], '')}. Download the data there, or train on the "
        "built-in dataset instead (generated on first "
        f"use under {builtin_root('shapes')!r}): use a config from configs/shapes/ or "
        "configs/builtin/, or override e.g. dataloader.train.dataset.names=mkd_digits_train "
        "dataloader.test.dataset.names=mkd_digits_val (or mkd_shapes_{train,val})"
    )
