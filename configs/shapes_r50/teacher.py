"""A teacher of another architecture for the shapes proxy: RetinaNet R50-FPN (bottleneck
ResNet-50), where ``configs/shapes/teacher.py`` is the student's own R18-FPN.

The published comparisons distil a larger backbone into a smaller one (RetinaNet ResNeXt-101 to
R50); on the same-architecture pair a loss that copies the teacher's features one to one can
carry the student most of the way. This teacher tests whether the ordering of the methods holds
when it cannot. Same data, head (128 wide), anchors and recipe as the R18 teacher, from its own
bottom-up pretrained on the same crops (``output/pretrained/shapes_R50.pth``,
``tools/pretrain_backbone.py --config-file configs/shapes_r50/teacher.py``), and trained twice
as long (1,200 iterations), so that a student on twice its short schedule still has a teacher
well ahead.
"""
from ..builtin.retinanet_R50_scratch import model
from ..shapes.teacher import dataloader, lr_multiplier, optimizer, train  # noqa: F401

model.num_classes = 8
train.max_iter = 1200
train.eval_period = 400
train.checkpointer.period = 1200
train.output_dir = "./output/shapes_r50/teacher"
train.init_checkpoint = "./output/pretrained/shapes_R50.pth"
