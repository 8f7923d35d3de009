"""MKD on the built-in dataset (CPU), the demo's pair: a RetinaNet R18 trained for the R18
config's full schedule teaches a RetinaNet R18 student trained on a shorter one.

Why not a bigger teacher: from scratch, deeper ResNets learn more slowly per iteration
(docs/records/digits.md), and ``make demo`` has 15 minutes on 2 CPU cores; the strongest teacher
it can train in that time is the student's own architecture given more iterations. The teacher is
``retinanet_R18_scratch.py`` as it is (300 iterations); ``retinanet_R50_to_R18_mkd.py`` is the pair
of the distillation benchmark.
"""
from .retinanet_R50_to_R18_mkd import dataloader, lr_multiplier, model, optimizer, train
from .retinanet_R18_scratch import model as _teacher
from .retinanet_R18_scratch import train as _teacher_train

model.teacher = _teacher
model.teacher_weights = _teacher_train.output_dir + "/model_final.pth"

train.output_dir = "./output/retinanet_R18_to_R18_mkd"
