"""Pre-trains the ResNet bottom-up of a detector config by classifying crops of the instances of
its own train split: the CPU proxy's stand-in for the ImageNet backbone real users start from.

    python tools/pretrain_backbone.py --config-file configs/shapes/student.py

The bottom-up is ``cfg.model``'s own (depth, norms and input normalisation as in the detector),
with a pooled linear classifier on its last stage; each annotated box of the train split, with
some context, becomes a small square crop (random crop and flip as augmentation). Every tenth
train image is held out to measure crop accuracy: the val split is never read.

The result is a Detectron2 checkpoint ``{"model": {"backbone.bottom_up.<name>": tensor}}`` in
``<output-root>/<name>-<hash>/model_final.pth`` beside ``accuracy.json``, the hash covering the
bottom-up's config, the dataset's generator version and the pretraining settings: the same
command finds it there and does not train again. ``--link`` (default
``<output-root>/<dataset>_R<depth>.pth``, e.g. ``output/pretrained/shapes_R18.pth``) points at
it: the fixed path that configs load with ``train.init_checkpoint`` (a plain detector: the rest
of the model stays random and is logged as missing, as with ImageNet weights) or
``model.student_weights`` (an MKD student).
"""
import argparse
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.layers import ROIAlign
from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.structures import BoxMode
from detectron2.utils.logger import setup_logger
from fvcore.common.param_scheduler import CosineParamScheduler
from omegaconf import OmegaConf
from torch import nn

from mkd.engine.datasets import check_datasets_available
from mkd_bench import runs
from mkd_bench.datasets import BUILTIN_DATASETS, GENERATORS

logger = logging.getLogger("mkd.pretrain")
DEFAULT_OUTPUT_ROOT = "./output/pretrained"
HOLDOUT_EVERY = 10  # every tenth train image's crops measure accuracy


@dataclass(frozen=True)
class Settings:
    """Everything of the pretraining the weights depend on (hashed into the cache name)."""
    iters: int = 600
    batch_size: int = 64
    crop_size: int = 48
    context: float = 0.25  # added on each side of a box, as a fraction of its longer side
    lr: float = 0.01  # 0.1 stays at chance: the detector's inputs are raw 0-255 pixels
    weight_decay: float = 1e-4
    seed: int = 0


def train_dataset_names(cfg):
    """The detector's train datasets; raises if any of them is also a test dataset (the crops
    must never come from the data the detector is evaluated on)."""
    def names(split):
        value = OmegaConf.select(cfg, f"dataloader.{split}.dataset.names", default=None) or []
        return [value] if isinstance(value, str) else list(value)

    train, test = names("train"), names("test")
    if not train:
        raise ValueError("The config has no dataloader.train.dataset.names: pretraining reads "
                         "the crops from the detector's train split; set it.")
    shared = sorted(set(train) & set(test))
    if shared:
        raise ValueError(f"dataloader.train and dataloader.test share {shared}: pretraining on "
                         "them would leak the evaluation data into the backbone. Give the "
                         "detector a train split distinct from its test split.")
    return train


def cache_key(cfg, settings: Settings) -> str:
    """A digest of the bottom-up's config, its input normalisation, the train data (with the
    generator version of built-in datasets) and the settings."""
    names = train_dataset_names(cfg)
    versions = {key: GENERATORS[key].GENERATOR_VERSION
                for key, _ in (BUILTIN_DATASETS[n] for n in names if n in BUILTIN_DATASETS)}
    content = [OmegaConf.to_container(cfg.model.backbone.bottom_up, resolve=False),
               list(cfg.model.pixel_mean), list(cfg.model.pixel_std), input_format(cfg),
               names, versions, asdict(settings)]
    text = json.dumps(content, sort_keys=True, default=runs.qualified_name)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def input_format(cfg) -> str:
    return OmegaConf.select(cfg, "model.input_format", default=None) or "BGR"


def instance_crops(records, crop_size: int, context: float, image_format: str):
    """Every annotated box of ``records`` as a square ``crop_size`` crop centred on it, its side
    the box's longer side plus ``context`` on each side (outside the image: zeros).
    Returns (uint8 crops N x 3 x S x S, contiguous class ids N, image index of each crop N)."""
    align = ROIAlign((crop_size, crop_size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    crops, labels, owners = [], [], []
    for index, record in enumerate(records):
        annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        if not annotations:
            continue
        image = utils.read_image(record["file_name"], format=image_format)
        image = torch.as_tensor(image.transpose(2, 0, 1).copy(), dtype=torch.float32)[None]
        boxes = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                              for a in annotations], dtype=torch.float32)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values * (0.5 + context)
        rois = torch.cat([torch.zeros(len(boxes), 1), centres - half, centres + half], dim=1)
        crops.append(align(image, rois).round().clamp(0, 255).to(torch.uint8))
        labels += [a["category_id"] for a in annotations]
        owners += [index] * len(annotations)
    if not crops:
        raise ValueError("The train split has no annotated boxes to crop: nothing to pretrain on.")
    return torch.cat(crops), torch.tensor(labels), torch.tensor(owners)


class CropClassifier(nn.Module):
    """The detector's bottom-up, its last stage average-pooled into a linear classifier; inputs
    normalised with the detector's pixel mean and std."""

    def __init__(self, bottom_up, num_classes: int, pixel_mean, pixel_std):
        super().__init__()
        self.bottom_up = bottom_up
        self.last = list(bottom_up.output_shape())[-1]  # the deepest output
        self.fc = nn.Linear(bottom_up.output_shape()[self.last].channels, num_classes)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, -1, 1, 1), False)

    def forward(self, crops):
        x = (crops.float() - self.pixel_mean) / self.pixel_std
        return self.fc(self.bottom_up(x)[self.last].mean(dim=(2, 3)))


def augment(crops, generator):
    """Random flips and random translations of up to an eighth of the side (zero padding)."""
    size = crops.shape[-1]
    pad = size // 8
    padded = F.pad(crops, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    out = padded[..., dy:dy + size, dx:dx + size]
    flip = torch.rand(len(out), generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def accuracy(classifier, crops, labels, batch_size: int) -> float:
    classifier.eval()
    with torch.no_grad():
        predictions = torch.cat([classifier(crops[i:i + batch_size]).argmax(1)
                                 for i in range(0, len(crops), batch_size)])
    classifier.train()
    return (predictions == labels).float().mean().item()


def pretrain(config_file: str, settings: Settings, output_root: str = DEFAULT_OUTPUT_ROOT,
             link: str = "", overrides: Sequence[str] = ()) -> str:
    """Pretrains (or finds in the cache) the bottom-up of ``config_file``'s detector (with
    ``overrides``, e.g. other train data); returns the checkpoint's path, after pointing
    ``link`` (``""``: the default name) at it."""
    cfg = runs.load_config(config_file, overrides)
    names = train_dataset_names(cfg)
    model = instantiate(cfg.model)
    if not hasattr(model, "num_classes"):
        raise ValueError(
            f"{config_file} builds a {type(model).__name__}, not a detector with num_classes "
            "(RetinaNet, FCOS): pretraining classifies crops of the boxes of the detector's "
            "train split into its classes. Pretrain such a detector with the same bottom-up on "
            "the same images instead (for configs/shapes_seg/: --config-file "
            "configs/shapes/student.py) and start from its checkpoint.")
    bottom_up = model.backbone.bottom_up
    depth = OmegaConf.select(cfg, "model.backbone.bottom_up.stages.depth", default="")
    dataset = "_".join(BUILTIN_DATASETS[n][0] if n in BUILTIN_DATASETS else n for n in names)
    directory = os.path.join(output_root, f"{dataset}_R{depth}-{cache_key(cfg, settings)}")
    path = os.path.join(directory, "model_final.pth")
    report = os.path.join(directory, "accuracy.json")
    if os.path.isfile(path) and os.path.isfile(report):
        logger.info(f"Found the pretrained bottom-up in the cache: {path}")
    else:
        _train(cfg, names, bottom_up, model.num_classes, settings, directory, report)
    _point(link or os.path.join(output_root, f"{dataset}_R{depth}.pth"), path)
    return path


def _train(cfg, names, bottom_up, num_classes, settings, directory, report):
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    check_datasets_available(names)
    records = [r for n in names for r in DatasetCatalog.get(n)]
    start = time.perf_counter()
    crops, labels, owners = instance_crops(records, settings.crop_size, settings.context,
                                           input_format(cfg))
    held_out = owners % HOLDOUT_EVERY == 0
    train_crops, train_labels = crops[~held_out], labels[~held_out]
    logger.info(f"{len(train_crops)} train crops, {int(held_out.sum())} held out, from "
                f"{len(records)} images of {names} ({time.perf_counter() - start:.0f} s)")
    classifier = CropClassifier(bottom_up.requires_grad_(True), num_classes,
                                cfg.model.pixel_mean, cfg.model.pixel_std)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=settings.lr, momentum=0.9,
                                weight_decay=settings.weight_decay)
    schedule = WarmupParamScheduler(CosineParamScheduler(1.0, 0.0), warmup_factor=0.01,
                                    warmup_length=0.05)
    scheduler = LRMultiplier(optimizer, schedule, settings.iters)
    start = time.perf_counter()
    for iteration in range(settings.iters):
        batch = torch.randint(0, len(train_crops), (settings.batch_size,), generator=generator)
        loss = F.cross_entropy(classifier(augment(train_crops[batch], generator)),
                               train_labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if (iteration + 1) % 50 == 0 or iteration + 1 == settings.iters:
            logger.info(f"iter {iteration + 1}/{settings.iters} loss {loss.item():.3f}")
    seconds = time.perf_counter() - start
    results = {
        "held_out_accuracy": accuracy(classifier, crops[held_out], labels[held_out],
                                      settings.batch_size) if held_out.any() else None,
        "train_accuracy": accuracy(classifier, train_crops, train_labels, settings.batch_size),
        "train_crops": len(train_crops), "held_out_crops": int(held_out.sum()),
        "seconds": round(seconds, 1), "seconds_per_iter": round(seconds / settings.iters, 3),
        "datasets": names, "settings": asdict(settings),
    }
    logger.info(f"Crop accuracy: {results}")
    os.makedirs(directory, exist_ok=True)
    wrapper = nn.ModuleDict({"backbone": nn.ModuleDict({"bottom_up": bottom_up})})
    DetectionCheckpointer(wrapper, directory).save("model_final")
    with open(report, "w") as f:  # written last: its presence marks a finished cache entry
        json.dump(results, f, indent=2)


def _point(link: str, target: str) -> None:
    """``link`` -> ``target`` as a relative symlink, replacing an older one."""
    os.makedirs(os.path.dirname(os.path.abspath(link)), exist_ok=True)
    temporary = f"{link}.tmp{os.getpid()}"
    os.symlink(os.path.relpath(target, os.path.dirname(os.path.abspath(link))), temporary)
    os.replace(temporary, link)
    logger.info(f"{link} -> {target}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="a detector LazyConfig")
    parser.add_argument("--output-root", default=DEFAULT_OUTPUT_ROOT)
    parser.add_argument("--link", default="", help="the fixed path configs load (default "
                        "<output-root>/<dataset>_R<depth>.pth)")
    for name, default in asdict(Settings()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("overrides", nargs="*", help="path.key=value, e.g. "
                        "dataloader.train.dataset.names=mkd_shapes_seed1_train")
    args = parser.parse_args(argv)
    setup_logger(name="mkd.pretrain")
    settings = Settings(**{k: getattr(args, k) for k in asdict(Settings())})
    print(pretrain(args.config_file, settings, args.output_root, args.link, args.overrides))

