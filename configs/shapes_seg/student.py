"""The segmentation student of the shapes proxy: semantic FPN R18 at the short student
schedule, on the shapes' per-pixel labels (background + 8 classes), its bottom-up the detection
student's pretrained one (``output/pretrained/shapes_R18.pth``: ``python
tools/pretrain_backbone.py --config-file configs/shapes/student.py``, cached).

Detectron2's semantic FPN (configs/common/models/semantic_fpn.py) edited as the detection
configs edit RetinaNet to train from scratch on CPU: BN in the ResNet, GN in the FPN, 128 wide.
Optimizer and schedule are the built-in detection configs'. The distillation configs of this
directory import their student and schedule from here.
"""
from ..builtin.retinanet_R18_scratch import lr_multiplier, optimizer, train  # noqa: F401
from ..common.data.shapes_sem_seg import dataloader  # noqa: F401
from ..common.models.semantic_fpn import model

model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages.norm = "BN"
model.backbone.bottom_up.stages.depth = 18
del model.backbone.bottom_up.stages.stride_in_1x1  # BasicBlock has no 1x1 conv to stride
model.backbone.norm = "GN"
model.backbone.out_channels = 128
model.sem_seg_head.conv_dims = 128
model.sem_seg_head.num_classes = 9  # background + CATEGORY_NAMES
model.sem_seg_head.ignore_value = 255  # mkd_bench.datasets.semantic.IGNORE_LABEL

train.max_iter = 200
train.eval_period = 100
train.log_period = 20
train.checkpointer.period = 200
train.output_dir = "./output/shapes_seg/student"
# The detection student's pretrained bottom-up (same ResNet-18 keys, same train images): from
# scratch the teacher learns too little to teach (docs/segmentation.md).
train.init_checkpoint = "./output/pretrained/shapes_R18.pth"
