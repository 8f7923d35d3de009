"""A deeper teacher for the shapes proxy: RetinaNet R34-FPN, where ``configs/shapes/teacher.py``
is the student's own R18-FPN.

The published comparisons distil a deeper backbone into a shallower one (RetinaNet R101 to R50,
ResNeXt-101 to R50); on the same-architecture pair a loss that copies the teacher's features one
to one can carry the student most of the way. R34 to R18 is that setting at this proxy's scale:
the R18 teacher's data, head (128 wide), anchors and recipe with 16 residual blocks instead of
8, from its own bottom-up pretrained on the same crops (``output/pretrained/shapes_R34.pth``,
``tools/pretrain_backbone.py --config-file configs/shapes_r34/teacher.py``), and trained twice
as long (1,200 iterations), so that a student on twice its short schedule still has a teacher
ahead. (An R50 bottom-up stayed near chance in the pretraining's 600 iterations: loss 1.82 at
550, chance 2.08, where the R18's reaches 91 % held-out accuracy.)
"""
from ..shapes.teacher import (  # noqa: F401  a LazyConfig is its globals
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.backbone.bottom_up.stages.depth = 34
train.max_iter = 1200
train.eval_period = 400
train.checkpointer.period = 1200
train.output_dir = "./output/shapes_r34/teacher"
train.init_checkpoint = "./output/pretrained/shapes_R34.pth"
