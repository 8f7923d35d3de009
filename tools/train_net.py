#!/usr/bin/env python
"""Train or evaluate a detector described by a LazyConfig file, with Detectron2's own machinery
(``mkd.engine.train``: dataset checks, strict overrides, atomic checkpoints, exact resume).
Usage::

    python tools/train_net.py --config-file configs/shapes/mkd.py train.output_dir=./output/mkd
    python tools/train_net.py --config-file ... --resume
    python tools/train_net.py --config-file ... --eval-only train.init_checkpoint=model_final.pth

For a distillation config, ``--eval-only`` evaluates the student, from a training checkpoint or
from the student exported by ``tools/export_student.py``.
"""
from detectron2.engine import default_argument_parser, launch

from mkd.engine.train import main

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
