"""Stand-ins, in their real formats, for what a COCO run downloads: weight files where
``detectron2://`` resolves, and a tiny dataset in COCO 2017's layout with real category ids.

The weights hold perturbed copies of a freshly built model's tensors (so they fit, and equality
after loading proves they were loaded), scaled where trained ResNets differ from fresh ones so
that training on them stays finite, under the names each format really uses.
"""
import json
import pickle
import re
from pathlib import Path

import numpy as np
import torch
import torchvision
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from PIL import Image, ImageDraw

D2_PREFIX = "detectron2://"
# Detectron2 resolves detectron2://NAME to this URL, which iopath caches as
# $FVCORE_CACHE/<the URL's path>, i.e. $FVCORE_CACHE/detectron2/NAME.
D2_URL_CACHE_DIR = "detectron2"

#: (input_format, pixel_mean, pixel_std) the weights of each kind were trained with.
MSRA_INPUT = ("BGR", [103.530, 116.280, 123.675], [1.0, 1.0, 1.0])  # std absorbed into conv1
TORCHVISION_INPUT = ("RGB", [123.675, 116.280, 103.530], [58.395, 57.120, 57.375])

_MSRA_BRANCHES = {"shortcut": "branch1", "conv1": "branch2a", "conv2": "branch2b",
                  "conv3": "branch2c"}


def local_path(path, cache_dir):
    """Where a config's weight path is read from: the iopath cache for ``detectron2://``."""
    if path.startswith(D2_PREFIX):
        return Path(cache_dir) / D2_URL_CACHE_DIR / path[len(D2_PREFIX):]
    return Path(path)


def _perturbed(name, tensor, rng):
    """A float tensor plus small zero-mean noise (a variance kept positive), as an ndarray; an
    integer one as it is. Zero-mean, so a deep network of such weights stays as tame as one
    of the fresh weights (an offset would compound layer after layer)."""
    value = tensor.detach().cpu().numpy()
    if not np.issubdtype(value.dtype, np.floating):
        return value.copy()
    scale = 0.1 * float(value.std()) if value.size > 1 else 0.0
    value = value + rng.standard_normal(value.shape, dtype=np.float32) * (scale or 0.01)
    return np.abs(value) if name.endswith("running_var") else value.astype(np.float32)


def _msra_like(name, tensor):
    """A fresh Detectron2 ResNet tensor scaled as in MSRA's trained weights, so that a deep
    network of them stays tame without BN statistics: conv1 absorbs the input's std (about
    57, these weights read ``pixel_std=1``) and each residual branch ends small."""
    if name.endswith("stem.conv1.weight"):
        return tensor / 57.0
    if re.search(r"res\d\.\d+\.conv3\.norm\.weight$", name):
        return tensor * 0.25
    return tensor


def _write_pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_model_zoo_pkl(path, state_dict):
    """A model-zoo ``.pkl`` (``{"model": {name: ndarray}, "__author__": ...}``) of the model
    whose ``state_dict`` is given. Returns the tensors written, by name."""
    rng = np.random.default_rng(0)
    model = {k: _perturbed(k, _msra_like(k, v), rng) for k, v in state_dict.items()}
    _write_pickle(path, {"model": model, "__author__": "Detectron2 Model Zoo"})
    return {k: torch.from_numpy(v) for k, v in model.items()}


def msra_name(name):
    """The MSRA Caffe2 name of a Detectron2 ResNet tensor (``res2.0.conv1.norm.weight`` ->
    ``res2_0_branch2a_bn_s``); None for BN running statistics, which MSRA's ImageNet files
    fold into the scale and bias."""
    module, _, kind = name.rpartition(".")
    if module.endswith(".norm"):
        if kind not in ("weight", "bias"):
            return None
        module, suffix = module[: -len(".norm")], "_bn_" + {"weight": "s", "bias": "b"}[kind]
    else:
        suffix = "_" + {"weight": "w", "bias": "b"}[kind]
    if module == "stem.conv1":
        return ("res_conv1" if "_bn_" in suffix else "conv1") + suffix
    stage, block, layer = module.split(".")
    return f"{stage}_{block}_{_MSRA_BRANCHES[layer]}{suffix}"


def write_msra_pkl(path, bottom_up_state):
    """An ImageNet ``.pkl`` as ``ImageNetPretrained/MSRA/R-50.pkl``: a flat dict of Caffe2 names
    (and the classifier ``pred_w``/``pred_b``). Returns the tensors written, by the Detectron2
    name of the ResNet (``stem.conv1.weight``, ...)."""
    rng = np.random.default_rng(0)
    written = {k: _perturbed(k, _msra_like(k, v), rng) for k, v in bottom_up_state.items()
               if msra_name(k)}
    blobs = {msra_name(k): v for k, v in written.items()}
    res5 = max(v.shape[0] for k, v in written.items() if k.startswith("res5") and v.ndim == 4)
    blobs["pred_w"] = np.full((1000, res5), 0.01, np.float32)
    blobs["pred_b"] = np.zeros(1000, np.float32)
    _write_pickle(path, blobs)
    return {k: torch.from_numpy(v) for k, v in written.items()}


def torchvision_to_detectron2(name):
    """The name ``convert-torchvision-to-d2.py`` gives a torchvision ResNet tensor:
    ``layer1.0.bn1.weight`` -> ``res2.0.conv1.norm.weight``, ``fc.weight`` -> ``stem.fc.weight``."""
    layer = re.match(r"layer(\d)\.(.*)", name)
    name = f"res{int(layer[1]) + 1}.{layer[2]}" if layer else "stem." + name
    name = re.sub(r"\bbn(\d)\b", r"conv\1.norm", name)
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def write_torchvision_pkl(path, depth):
    """``R-{depth}.pkl`` as ``convert-torchvision-to-d2.py`` writes it from torchvision's ResNet
    (every tensor, ``fc`` and ``num_batches_tracked`` included). Returns the tensors written,
    by their converted name."""
    rng = np.random.default_rng(0)
    resnet = getattr(torchvision.models, f"resnet{depth}")()
    model = {torchvision_to_detectron2(k): _perturbed(k, v, rng)
             for k, v in resnet.state_dict().items()}
    _write_pickle(path, {"model": model, "__author__": "torchvision", "matching_heuristics": True})
    return {k: torch.from_numpy(np.asarray(v)) for k, v in model.items()}


# -- the dataset ---------------------------------------------------------------------------------
#: Category ids every split uses: ids after gaps in COCO's numbering (12, 26, 29, 30, 45, ...
#: are unused) and the last one, so a contiguous-id mix-up shows.
COCO_IDS_USED = (1, 13, 27, 31, 46, 67, 70, 90)


def coco_things():
    """COCO's 80 thing categories with their real ids (1..90 with gaps) and names."""
    return [{"id": c["id"], "name": c["name"], "supercategory": "thing"}
            for c in COCO_CATEGORIES if c["isthing"]]


def _shape(rng, width, height):
    """A random filled rectangle or triangle: (polygon as a flat xy list, bbox xywh, area)."""
    w, h = rng.uniform(0.3, 0.6) * width, rng.uniform(0.3, 0.6) * height
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    if rng.random() < 0.5:
        points = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
        area = w * h
    else:
        points = [(x, y + h), (x + w / 2, y), (x + w, y + h)]
        area = w * h / 2
    polygon = [round(float(c), 2) for point in points for c in point]
    return polygon, [round(float(v), 2) for v in (x, y, w, h)], float(area)


def write_coco(root, num_images=None, image_size=(96, 128), seed=0):
    """``root/coco/{annotations/instances_{train,val}2017.json,train2017/,val2017/}`` as COCO
    2017 lays them out: JPEGs named by 12-digit image id, 1-3 objects each (box, polygon, area,
    ``iscrowd=0``) of the categories ``COCO_IDS_USED``, all 80 categories declared.
    ``num_images``: per split, default ``{"train": 4, "val": 2}``."""
    num_images = num_images or {"train": 4, "val": 2}
    rng = np.random.default_rng(seed)
    height, width = image_size
    coco = Path(root) / "coco"
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    image_id, annotation_id, category = 139, 1, 0
    for split, count in num_images.items():
        images, annotations = [], []
        (coco / f"{split}2017").mkdir(exist_ok=True)
        for _ in range(count):
            image = Image.fromarray(rng.integers(0, 60, (height, width, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(rng.integers(1, 4)):
                polygon, bbox, area = _shape(rng, width, height)
                draw.polygon(polygon, fill=tuple(int(c) for c in rng.integers(100, 256, 3)))
                annotations.append({
                    "id": annotation_id, "image_id": image_id, "iscrowd": 0, "area": area,
                    "category_id": COCO_IDS_USED[category % len(COCO_IDS_USED)],
                    "bbox": bbox, "segmentation": [polygon],
                })
                annotation_id, category = annotation_id + 1, category + 1
            file_name = f"{image_id:012d}.jpg"
            image.save(coco / f"{split}2017" / file_name, quality=90)
            images.append({"id": image_id, "file_name": file_name, "height": height,
                           "width": width})
            image_id += 1
        with open(coco / "annotations" / f"instances_{split}2017.json", "w") as f:
            json.dump({"info": {"description": "tiny stand-in for COCO 2017"}, "licenses": [],
                       "images": images, "annotations": annotations,
                       "categories": coco_things()}, f)
    return coco
