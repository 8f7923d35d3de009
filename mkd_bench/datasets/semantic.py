"""Per-pixel semantic labels of the built-in shapes dataset, derived from its COCO json.

The detection split (images + instance json) stays exactly as the generator writes it; the
labels are rasterised from its polygons into ``<root>/sem_seg/<split>/<image>.png`` with their
own version stamp, on first use, so that Detectron2's ``DatasetMapper`` and ``SemSegEvaluator``
read them unchanged. Label ``k`` is COCO category ``k`` (so 0 is background); the one-pixel band
on either side of each outline, where the image blends shape and backdrop, is ``IGNORE_LABEL``.
"""
import functools
import hashlib
import json
import logging
import os
import time

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from iopath.common.file_io import file_lock
from PIL import Image

from mkd.engine.resume import AtomicWriter

from .coco_writer import SPLITS, split_paths

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
# Bumped whenever the rasterisation changes: labels written by another version are rewritten.
LABELS_VERSION = 1
_STAMP = "labels_version.json"


def sem_seg_name(dataset, split):
    return f"mkd_{dataset}_sem_seg_{split}"


def labels_dir(root, split):
    return os.path.join(root, "sem_seg", split)


def label_file(root, split, image_file_name):
    stem = os.path.splitext(os.path.basename(image_file_name))[0]
    return os.path.join(labels_dir(root, split), stem + ".png")


def rasterize_labels(image, annotations):
    """The label map (uint8, H x W) of one COCO image record and its annotations."""
    from pycocotools import mask as mask_util

    height, width = image["height"], image["width"]
    labels = np.zeros((height, width), dtype=np.uint8)
    border = np.zeros((height, width), dtype=bool)
    for ann in annotations:
        rles = mask_util.frPyObjects(ann["segmentation"], height, width)
        inside = mask_util.decode(mask_util.merge(rles)).astype(bool)
        labels[inside] = ann["category_id"]
        border |= _dilate(inside) & _dilate(~inside)
    labels[border] = IGNORE_LABEL
    return labels


def _dilate(mask):
    """3x3 binary dilation: a pixel is set if it or one of its 8 neighbours is."""
    padded = np.pad(mask, 1)
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy: dy + height, dx: dx + width]
    return out


def ensure_labels(root, split):
    """Write the labels of ``split`` under ``root`` unless the stamped ones match its json
    (a regenerated detection split gets new labels)."""
    json_file, _ = split_paths(root, split)
    with open(json_file, "rb") as f:
        source = hashlib.sha1(f.read()).hexdigest()
    stamp = {"version": LABELS_VERSION, "source_sha1": source}
    stamp_file = os.path.join(labels_dir(root, split), _STAMP)
    if _read_stamp(stamp_file) == stamp:
        return
    with file_lock(stamp_file):  # one of several processes (ranks) writes them
        if _read_stamp(stamp_file) == stamp:
            return
        start = time.perf_counter()
        with open(json_file) as f:
            coco = json.load(f)
        by_image = {image["id"]: [] for image in coco["images"]}
        for ann in coco["annotations"]:
            by_image[ann["image_id"]].append(ann)
        os.makedirs(labels_dir(root, split), exist_ok=True)
        for image in coco["images"]:
            labels = rasterize_labels(image, by_image[image["id"]])
            Image.fromarray(labels).save(label_file(root, split, image["file_name"]))
        # Last, and whole or not at all: its presence means the labels are complete.
        with AtomicWriter(stamp_file, "w") as f:
            json.dump(stamp, f)
        logger.info("Wrote %d semantic label maps to %s in %.1f s", len(coco["images"]),
                    labels_dir(root, split), time.perf_counter() - start)


def _read_stamp(stamp_file):
    if not os.path.isfile(stamp_file):
        return None
    with open(stamp_file) as f:
        return json.load(f)


def load_sem_seg_dicts(root, split):
    """Detectron2 dataset dicts of ``split``: image, label map, size and id per image."""
    json_file, image_root = split_paths(root, split)
    with open(json_file) as f:
        images = json.load(f)["images"]
    return [
        {
            "file_name": os.path.join(image_root, image["file_name"]),
            "sem_seg_file_name": label_file(root, split, image["file_name"]),
            "height": image["height"],
            "width": image["width"],
            "image_id": image["id"],
        }
        for image in images
    ]


def register_sem_seg(root, dataset, category_names, prepare):
    """Register ``mkd_<dataset>_sem_seg_{train,val}`` under ``root``; ``prepare()`` makes sure
    the detection splits exist (the labels are derived from them)."""
    for split in SPLITS:
        name = sem_seg_name(dataset, split)
        if name in DatasetCatalog.list():
            if MetadataCatalog.get(name).get("dataset_root") == root:
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)

        prepare_split = functools.partial(_prepare, prepare, root, split)

        def load(prepare_split=prepare_split, split=split):
            prepare_split()
            return load_sem_seg_dicts(root, split)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            image_root=split_paths(root, split)[1],
            sem_seg_root=labels_dir(root, split),
            evaluator_type="sem_seg",
            stuff_classes=["background", *category_names],
            ignore_label=IGNORE_LABEL,
            dataset_root=root,
            # mkd.engine.datasets' checks prepare the labels (generate them) instead of reading.
            prepare=prepare_split,
        )


def _prepare(prepare_detection, root, split):
    """The detection split, then its labels: what loading and the dataset checks need first."""
    prepare_detection()
    ensure_labels(root, split)
