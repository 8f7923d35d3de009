#!/usr/bin/env python
"""How hard a distillation config pulls next to its task, before training: at initialisation,
with the teacher loaded and no update, on the first ``--batches`` training batches, the
distillation-to-task ratios of the losses and of the gradients both send into the student (at
its FPN outputs and its bottom-up parameters). For any MKD, mimic, FGD or MGD LazyConfig
(``mkd_bench.probe``); a ratio far from the one a tuned config starts at says to rescale its weights.

    python tools/probe_distillation.py --config-file configs/coco/retinanet_R101_to_R50_mkd_2x.py \\
        --batches 4 model.teacher_weights=<teacher .pkl/.pth> [path.key=value ...]

Overrides are applied as ``tools/train_net.py`` applies them: a key the config does not have is
refused (``+key=value`` adds one on purpose). The training loader runs without workers.
"""
import argparse
import json

from detectron2.config import LazyConfig
from omegaconf import OmegaConf

from mkd.engine.datasets import check_training_data
from mkd.engine.overrides import apply_known_overrides
from mkd_bench.probe import probe
from mkd.engine.train import dataset_names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a distillation LazyConfig (MKD)")
    parser.add_argument("--batches", type=int, default=4,
                        help="training batches to average over (default: 4)")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config path.key=value")
    return parser.parse_args(argv)


def format_report(config_file, results) -> str:
    lines = [f"{config_file}: initialisation, mean of {results['batches']} batches"]
    lines += [f"  {key:<28}{value:>12.4g}" for key, value in results["losses"].items()]
    lines.append(f"  {'':<28}{'task':>12}{'distillation':>14}{'ratio':>10}")
    for name, label in (("loss", "loss"), ("fpn_grad", "gradient at FPN outputs"),
                        ("bottom_up_grad", "gradient at bottom-up")):
        lines.append(f"  {label:<28}{results[f'task_{name}']:>12.4g}"
                     f"{results[f'distillation_{name}']:>14.4g}{results[f'{name}_ratio']:>10.3g}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    cfg = apply_known_overrides(LazyConfig.load(args.config_file), args.opts, args.config_file)
    if OmegaConf.select(cfg, "dataloader.train.num_workers", default=None) is not None:
        cfg.dataloader.train.num_workers = 0  # a few batches: workers would only start slowly
    check_training_data(dataset_names(cfg, ("train",)))
    results = probe(cfg, args.batches)
    print(format_report(args.config_file, results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config_file, "overrides": args.opts, **results}, f,
                      indent=2)
    return results


if __name__ == "__main__":
    main()
