"""MKD on the built-in dataset (CPU): RetinaNet R50 teaches RetinaNet R18 (the demo's pair).

Train the teacher first: ``tools/train_net.py --config-file configs/builtin/retinanet_R50_scratch.py``
(``make demo`` does it and caches the result). The student keeps the R18 config's data,
optimizer and schedule, so it compares one-to-one with ``retinanet_R18_scratch.py``.
"""
from ..common.mkd import model
from .retinanet_R18_scratch import dataloader, lr_multiplier, optimizer, train
from .retinanet_R18_scratch import model as _student
from .retinanet_R50_scratch import model as _teacher
from .retinanet_R50_scratch import train as _teacher_train

model.student = _student
model.teacher = _teacher
model.teacher_weights = _teacher_train.output_dir + "/model_final.pth"
# A smaller decoder for small images on CPU (25 tokens per level at 160 px).
model.distiller.decoder.update(width=128, num_heads=4)

train.output_dir = "./output/retinanet_R50_to_R18_mkd"
