"""Checks that a run's datasets exist and hold data, before any data loader is built.

Detectron2 would stop deep inside its data loader ("Dataset 'x' is empty!", a bare
FileNotFoundError) naming neither the cause nor the fix. A dataset whose metadata has a
``prepare`` callable (the generated toy datasets of ``mkd_bench``) is prepared here instead of
checked: generated on first use, never empty.
"""
import os
import tempfile

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["check_datasets_available", "check_training_data", "check_writable"]

#: What a user without usable data can train on instead.
OTHER_DATA = ("or train on another dataset, e.g. dataloader.train.dataset.names="
              "mkd_shapes_train (built in)")

# How Detectron2 expects the semantic segmentation datasets it registers, by name prefix.
LAYOUTS = {
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


def check_writable(root, what="dataset root",
                   fix="pass another --root (or set MKD_DATASETS) to a writable directory"):
    """Fail before any work if the directory ``root`` (created if missing) cannot hold files,
    e.g. its parent is a file or it is read-only; the error names ``what`` and the ``fix``."""
    try:
        os.makedirs(root, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise PermissionError(
            f"{what} {root!r} is not writable ({type(err).__name__}: {err.strerror or err}); "
            f"{fix}"
        ) from err


def check_datasets_available(names):
    """Make sure every dataset in `names` can be loaded: prepare generated ones (their metadata's
    ``prepare``), raise FileNotFoundError naming the expected files for others (e.g. COCO)."""
    if isinstance(names, str):
        names = [names]
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            generated = ", ".join(n for n in sorted(registered)
                                  if MetadataCatalog.get(n).get("prepare") is not None)
            raise KeyError(
                f"dataset {name!r} is not registered. Use a registered name "
                f"({generated or 'no generated dataset is registered'}), one of Detectron2's "
                "(e.g. coco_2017_train), or register your own COCO-format data first with "
                "detectron2.data.datasets.register_coco_instances(name, {}, json_file, "
                "image_root). The toy datasets mkd_shapes_* and mkd_digits_* register when a "
                "config that reads them is loaded (configs/common/data/)."
            )
        metadata = MetadataCatalog.get(name)
        prepare = metadata.get("prepare", None)
        if prepare is not None:
            prepare()
            continue
        # COCO-style (json_file, image_root), Cityscapes (image_dir, gt_dir), ADE20K and other
        # load_sem_seg datasets (image_root, sem_seg_root)
        expected = [metadata.get(key, None) for key in
                    ("json_file", "image_root", "image_dir", "gt_dir", "sem_seg_root")]
        missing = [path for path in expected if path and not os.path.exists(path)]
        if missing:
            raise FileNotFoundError(missing_files_message(name, missing))


def check_training_data(names):
    """Make sure every dataset in `names` is available (`check_datasets_available`) and holds an
    object to learn from. Detectron2 would stop inside its data loader with "Dataset 'x' is
    empty!" or "No valid data found in x." (every image dropped for having no annotation that is
    not a crowd region), naming neither the cause nor the fix. Reads each dataset once more than
    Detectron2 does (seconds for COCO); generated datasets are non-empty and not read."""
    if isinstance(names, str):
        names = [names]
    check_datasets_available(names)
    for name in names:
        if MetadataCatalog.get(name).get("prepare", None) is not None:
            continue
        dicts = DatasetCatalog.get(name)
        if isinstance(dicts, torch.utils.data.Dataset):  # streamed: Detectron2 checks nothing
            continue
        json_file = MetadataCatalog.get(name).get("json_file", None)
        source = f"json_file {json_file!r}" if json_file else "its registered loader"
        if not dicts:
            raise ValueError(
                f"dataset {name!r} has no images: {source} gives none. Register it with the "
                "annotation file that lists its images (detectron2.data.datasets."
                f"register_coco_instances(name, {{}}, json_file, image_root)), {OTHER_DATA}"
            )
        if "annotations" in dicts[0] and not any(
                a.get("iscrowd", 0) == 0 for d in dicts for a in d["annotations"]):
            raise ValueError(
                f"dataset {name!r} has {len(dicts)} images but no object to train on: none has "
                f"an instance annotation that is not a crowd region ({source}), and Detectron2 "
                "trains only on images that have one. Register the split with its instance "
                "annotations (e.g. COCO's instances_train2017.json, not image_info_*.json), "
                f"{OTHER_DATA}"
            )


def missing_files_message(name, missing):
    detectron2_root = os.environ.get("DETECTRON2_DATASETS")
    current = repr(detectron2_root) if detectron2_root else "unset (defaults to ./datasets)"
    return (
        f"dataset {name!r} is missing {' and '.join(repr(path) for path in missing)}. "
        "Detectron2 looks for its built-in datasets under $DETECTRON2_DATASETS "
        f"(currently {current}; it is read when detectron2.data is first imported), e.g. COCO as "
        "$DETECTRON2_DATASETS/coco/{annotations/instances_train2017.json,train2017/,val2017/}"
        f"{LAYOUTS.get(name.split('_')[0], '')}. Download the data there, or train on the "
        "built-in dataset instead (generated on first use): use a config from configs/shapes/ or "
        "configs/builtin/, or override e.g. dataloader.train.dataset.names=mkd_shapes_train "
        "dataloader.test.dataset.names=mkd_shapes_val (or mkd_digits_{train,val})"
    )
