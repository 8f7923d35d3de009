"""What the tests share: tiny Detectron2 detectors and batches for CPU tests (built from the
model zoo's configs), tiny distillation models and distillers, and tools/train_net.py's setup."""
import math
import os
import runpy
import sys
from pathlib import Path

import torch
from detectron2 import model_zoo
from detectron2.config import instantiate
from detectron2.engine import default_argument_parser
from detectron2.layers import ShapeSpec
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from mkd import (
    MKD,
    DistillContext,
    FeatureLoss,
    FGDDistiller,
    GlobalLoss,
    MGDDistiller,
    MimicDistiller,
    MKDDecoder,
    MKDDistiller,
    PatchMasker,
)
from mkd.engine import train

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

# -- tools/train_net.py's setup --------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
#: Overrides that make any built-in config train for 3 quick iterations.
QUICK = ["train.max_iter=3", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0"]


def read_tree(root):
    """{relative path: bytes} of every file under root (to compare generated datasets)."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def train_net_setup(config, output_dir, overrides, resume=False, eval_only=False):
    """(args, cfg) as tools/train_net.py builds them from its command line."""
    argv = ["--config-file", str(config)] + ["--resume"] * resume + ["--eval-only"] * eval_only
    argv += [f"train.output_dir={output_dir}", *QUICK, *overrides]
    args = default_argument_parser().parse_args(argv)
    return args, train.setup(args)


# -- distillation models around tiny detectors ------------------------------------------------
def mkd_distiller(**kwargs):
    return MKDDistiller(
        decoder=MKDDecoder(width=32, depth=1, num_heads=4, patch_size=32),
        feature_loss=FeatureLoss(**kwargs), global_loss=GlobalLoss(),
    )


def make_mkd(tmp_path, teacher=("retinanet", 34, 32), student=("retinanet", 18, 32), **kwargs):
    t = build(*teacher, seed=0)
    path = tmp_path / "teacher.pth"
    torch.save({"model": t.state_dict()}, path)
    kwargs.setdefault("distiller", mkd_distiller())
    kwargs.setdefault("masker", PatchMasker(patch_size=32, mask_ratio=0.5))
    return MKD(student=build(*student, seed=1), teacher=t, teacher_weights=str(path),
               **kwargs)


def train_step(model, inputs=None, step=0):
    model.train()
    with EventStorage(step):
        losses = model(inputs or batch())
    total = sum(losses.values())
    total.backward()
    return losses


# -- distillers on random features ------------------------------------------------------------
STRIDES = {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
IMAGE = (96, 64)  # P6 and P7 are 2x1 and 1x1 maps
DISTILLERS = {
    "mimic": (MimicDistiller, {"loss_mimic"}),
    "fgd": (FGDDistiller, {"loss_fgd_fg", "loss_fgd_bg", "loss_fgd_attention", "loss_fgd_global"}),
    "mgd": (MGDDistiller, {"loss_mgd"}),
}


def level_shapes(channels):
    return {level: ShapeSpec(channels=channels, stride=s) for level, s in STRIDES.items()}


def build_distiller(name, student_channels=16, teacher_channels=32, **kwargs):
    return DISTILLERS[name][0](**kwargs).build(level_shapes(student_channels), level_shapes(teacher_channels))


def features(channels, batch=2, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return {
        level: torch.randn(batch, channels, -(-IMAGE[0] // s), -(-IMAGE[1] // s), generator=g)
        .requires_grad_(requires_grad)
        for level, s in STRIDES.items()
    }


def context(batch=2):
    boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 60.0, 90.0]]))
    return DistillContext(image_size=IMAGE,
                          gt_instances=[Instances(IMAGE, gt_boxes=boxes)] * batch)


# -- any two Detectron2 models ----------------------------------------------------------------
def wrap_mkd(tmp_path, teacher, student, **kwargs):
    path = tmp_path / "teacher.pth"
    torch.save({"model": teacher.state_dict()}, path)
    return MKD(
        student=student, teacher=teacher, teacher_weights=str(path),
        distiller=MKDDistiller(decoder=MKDDecoder(width=32, depth=1, num_heads=4, patch_size=32),
                               feature_loss=FeatureLoss(), global_loss=GlobalLoss()),
        masker=PatchMasker(patch_size=32, mask_ratio=0.5), **kwargs,
    )


def check_step_and_eval(model, inputs=None):
    """One MKD training step (finite losses, the student's deepest trainable bottom-up weights
    and the decoder get gradients, the teacher none and unchanged), then student-only eval."""
    inputs = inputs or batch()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    model.train()
    with EventStorage(0):
        losses = model(inputs)
    assert all(math.isfinite(float(v)) for v in losses.values()), losses
    assert float(losses["loss_mkd_feat"]) > 0
    sum(losses.values()).backward()
    deepest = [p for p in model.student.backbone.bottom_up.parameters() if p.requires_grad][-1]
    assert deepest.grad is not None and deepest.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.distiller.decoder.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k

    model.eval()
    calls = []
    model.teacher.backbone.register_forward_hook(lambda *a: calls.append("teacher"))
    with torch.no_grad():
        ours, alone = model(inputs), model.student(inputs)
    assert calls == []
    for a, b in zip(ours, alone):
        assert torch.equal(_prediction(a), _prediction(b))
    return losses


def _prediction(output):
    return output["instances"].pred_boxes.tensor if "instances" in output else output["sem_seg"]


# -- the command lines of tools/ --------------------------------------------------------------
def run_tool(name, argv):
    """Runs ``tools/<name>.py`` as its command line does (``__main__``, with ``argv``)."""
    script = str(REPO / "tools" / f"{name}.py")
    saved = sys.argv
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = saved
