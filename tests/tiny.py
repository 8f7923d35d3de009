"""Tiny Detectron2 detectors and batches for CPU tests, built from the model zoo's configs."""
import math

import torch
from detectron2 import model_zoo
from detectron2.config import instantiate
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, BitMasks, Instances

NUM_CLASSES = 3


def model_config(family: str = "retinanet", depth: int = 18, fpn_channels: int = 32):
    """A model-zoo model config with BN (trainable from scratch), a small FPN and few classes.
    ``family``: "retinanet", "faster_rcnn" or "mask_rcnn"."""
    name = "retinanet" if family == "retinanet" else "mask_rcnn_fpn"
    model = model_zoo.get_config(f"common/models/{name}.py").model
    bottom_up = model.backbone.bottom_up
    bottom_up.stem.norm = "BN"
    bottom_up.stages.norm = "BN"
    bottom_up.stages.depth = depth
    if depth < 50:  # BasicBlock takes no stride_in_1x1
        del bottom_up.stages.stride_in_1x1
    model.backbone.out_channels = fpn_channels
    res5 = 512 if depth < 50 else 2048
    if family == "retinanet":
        model.backbone.top_block.in_channels = res5
        model.head.input_shape = [ShapeSpec(channels=fpn_channels)] * 5
        model.head.conv_dims = [fpn_channels]
        model.num_classes = NUM_CLASSES
    else:
        model.proposal_generator.head.in_channels = fpn_channels
        model.proposal_generator.pre_nms_topk = (200, 100)
        model.proposal_generator.post_nms_topk = (50, 50)
        model.roi_heads.num_classes = NUM_CLASSES
        model.roi_heads.batch_size_per_image = 32
        model.roi_heads.box_head.input_shape = ShapeSpec(channels=fpn_channels, height=7, width=7)
        model.roi_heads.box_head.fc_dims = [64]
        model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=64)
        model.roi_heads.mask_head.input_shape = ShapeSpec(channels=fpn_channels, width=14,
                                                          height=14)
        model.roi_heads.mask_head.conv_dims = [16, 16]
        if family == "faster_rcnn":
            model.roi_heads.mask_in_features = None
            model.roi_heads.mask_pooler = None
            model.roi_heads.mask_head = None
    return model


def build(family: str = "retinanet", depth: int = 18, fpn_channels: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    return instantiate(model_config(family, depth, fpn_channels))


def batch(sizes=((64, 96), (80, 64)), seed: int = 0, with_masks: bool = True):
    """Training inputs: random images with a couple of boxes (and bitmasks) each."""
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for i, (h, w) in enumerate(sizes):
        image = torch.randint(0, 256, (3, h, w), generator=g).float()
        boxes = torch.tensor([[4.0, 6.0, w / 2, h / 2], [w / 3, h / 3, w - 2.0, h - 3.0]])
        inst = Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 2]))
        if with_masks:
            masks = torch.zeros(2, h, w, dtype=torch.bool)
            for j, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                masks[j, y0:y1, x0:x1] = True
            inst.gt_masks = BitMasks(masks)
        inputs.append({"image": image, "instances": inst, "image_id": 100 + i,
                       "height": h, "width": w})
    return inputs


def zoo_model_config(name: str, fpn_channels: int = 32):
    """The model of the model-zoo LazyConfig ``name`` (e.g. "COCO-Detection/fcos_R_50_FPN_1x.py")
    with only what a CPU test needs changed: BN for FrozenBN/SyncBN (trainable from scratch, no
    process group), a ResNet-18 or a four-block RegNet bottom-up, a tiny ViT, narrow FPN and
    heads, few classes, few proposals."""
    model = model_zoo.get_config(name).model
    backbone = model.backbone
    if "bottom_up" in backbone:
        _shrink_bottom_up(backbone.bottom_up)
        res5 = 512 if "stages" in backbone.bottom_up else 64
    else:
        _shrink_vit(backbone)
    if backbone.get("norm") == "SyncBN":
        backbone.norm = "BN"
    backbone.out_channels = fpn_channels
    top_block = backbone.top_block
    if "in_channels" in top_block:
        top_block.in_channels = fpn_channels if top_block.get("in_feature") == "p5" else res5
    if "head" in model:  # RetinaNet, FCOS
        model.head.input_shape = [ShapeSpec(channels=fpn_channels)] * len(model.head_in_features)
        model.head.conv_dims = [fpn_channels]
        if model.head.get("norm") == "GN":
            model.head.norm = group_norm_32
        model.num_classes = NUM_CLASSES
    else:
        _shrink_rcnn_heads(model, fpn_channels)
    return model


def group_norm_32(channels: int) -> torch.nn.GroupNorm:
    """Detectron2's "GN" (32 groups) for every width divisible by 32. Detectron2 0.6's
    RetinaNetHead (FCOS's base) probes its norm with one channel, which torch 2 refuses for
    GroupNorm(32, 1); this norm answers the probe with one group."""
    return torch.nn.GroupNorm(math.gcd(32, channels), channels)


def _shrink_bottom_up(bottom_up):
    if "stages" in bottom_up:  # ResNet
        bottom_up.stem.norm = bottom_up.stages.norm = "BN"
        bottom_up.stages.depth = 18
        bottom_up.stages.pop("stride_in_1x1", None)  # BasicBlock takes none
    else:  # RegNet: widths 8, 16, 32, 64 in four one-block stages
        bottom_up.update(norm="BN", stem_width=8, depth=4, w_0=8, w_a=13, w_m=2,
                         group_width=8)


def _shrink_vit(backbone):
    """Two blocks of width 32, one windowed, one global; pads to a 256 square."""
    backbone.net.update(img_size=256, embed_dim=32, depth=2, num_heads=2, window_size=4,
                        window_block_indexes=[0], drop_path_rate=0.0)
    backbone.square_pad = 256


def _shrink_rcnn_heads(model, fpn_channels):
    model.proposal_generator.head.in_channels = fpn_channels
    model.proposal_generator.pre_nms_topk = (200, 100)
    model.proposal_generator.post_nms_topk = (50, 50)
    heads = model.roi_heads
    heads.num_classes = NUM_CLASSES
    heads.batch_size_per_image = 32
    cascade = "box_heads" in heads
    for box_head in heads.box_heads if cascade else [heads.box_head]:
        box_head.input_shape = ShapeSpec(channels=fpn_channels, height=7, width=7)
        box_head.conv_dims = [16] if box_head.conv_dims else []
        box_head.fc_dims = [64]
    for predictor in heads.box_predictors if cascade else [heads.box_predictor]:
        predictor.input_shape = ShapeSpec(channels=64)
        if cascade:
            predictor.num_classes = NUM_CLASSES
    if heads.get("mask_head") is not None:
        heads.mask_head.input_shape = ShapeSpec(channels=fpn_channels, width=14, height=14)
        heads.mask_head.conv_dims = [16, 16]


def build_zoo(name: str, fpn_channels: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    return instantiate(zoo_model_config(name, fpn_channels))
