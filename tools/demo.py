#!/usr/bin/env python
"""``make demo``: generate the built-in dataset, train a small RetinaNet on it, evaluate it.

Runs in-process on CPU in a few minutes, through the functions of ``tools/train_net.py``.
"""
import argparse
import copy
import math
import os

from detectron2.engine import default_argument_parser

import train_net  # tools/train_net.py: this script's directory is on sys.path
from mkd.data import builtin_root, ensure_builtin_dataset

CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "configs/builtin/retinanet_R18_scratch.py"
)
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-iter", type=int, default=60, help="training iterations")
    parser.add_argument("--output-dir", default="./demo_output", help="checkpoints, logs, results")
    return parser.parse_args(argv)


def format_table(bbox):
    """One header row and one value row of COCO box metrics (in %, "nan" where undefined)."""
    values = [bbox.get(k, math.nan) for k in METRICS]
    header = " | ".join(f"{k:>6}" for k in METRICS)
    row = " | ".join(f"{v:6.2f}" for v in values)
    return f"{header}\n{row}"


def main(argv=None):
    args = parse_args(argv)
    print(f"[demo 1/3] generating the built-in dataset in {builtin_root()} if missing", flush=True)
    ensure_builtin_dataset()

    train_args = default_argument_parser().parse_args(
        [
            "--config-file",
            CONFIG,
            f"train.max_iter={args.max_iter}",
            f"train.output_dir={args.output_dir}",
        ]
    )
    cfg = train_net.setup(train_args)
    print(f"[demo 2/3] training RetinaNet R18-FPN for {args.max_iter} iterations", flush=True)
    # Evaluate once, in stage 3, rather than also at the end of training.
    train_cfg = copy.deepcopy(cfg)
    del train_cfg.dataloader.evaluator
    trainer = train_net.do_train(train_args, train_cfg)

    print(f"[demo 3/3] evaluating on {cfg.dataloader.test.dataset.names}", flush=True)
    results = train_net.do_test(cfg, trainer.model)
    print(format_table(results["bbox"]), flush=True)
    return results


if __name__ == "__main__":
    main()
