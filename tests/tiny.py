"""Tiny Detectron2 detectors and batches for CPU tests, built from the model zoo's configs."""
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
