"""Feature mimicking on COCO: ``retinanet_R101_to_R50_mkd_2x.py`` (teacher, student, data,
schedule) with MKD's masking and decoder replaced by a 1x1 adapter and the normalised MSE of
``mkd.baselines.MimicDistiller``. Mimicking has no published weight for this pair: ``weight`` is
the class default, 1.0 (the shapes benchmark calibrates and tunes it, docs/benchmark.md)."""
from detectron2.config import LazyCall as L

from mkd.modeling.distillers import MimicDistiller

from .retinanet_R101_to_R50_mkd_2x import (  # noqa: F401
    dataloader, lr_multiplier, model, optimizer, train,
)

model.masker = None
model.distiller = L(MimicDistiller)(weight=1.0, normalize="channel")
train.output_dir = "./output/coco/retinanet_R101_to_R50_mimic_2x"
