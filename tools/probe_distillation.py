#!/usr/bin/env python
"""How hard a distillation config pulls next to its task, before training: at initialisation,
with the teacher loaded and no update, on the first ``--batches`` training batches, the
distillation-to-task ratios of the losses and of the gradients both send into the student (at
its FPN outputs and its bottom-up parameters). For any MKD, mimic, FGD or MGD LazyConfig
(``mkd_bench.probe``); a ratio far from the one a tuned config starts at says to rescale its
weights.

    python tools/probe_distillation.py --config-file configs/coco/retinanet_R101_to_R50_mkd_2x.py \\
        --batches 4 model.teacher_weights=<teacher .pkl/.pth> [path.key=value ...]

Overrides are applied as ``tools/train_net.py`` applies them: a key the config does not have is
refused (``+key=value`` adds one on purpose). The training loader runs without workers.
"""
from mkd_bench.probe import main

if __name__ == "__main__":
    main()
