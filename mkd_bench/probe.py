"""Where a distillation config starts: at initialisation, with the teacher loaded and no update,
how hard its distillation pulls next to the task. The benchmark calibrates every method's
weights by the loss ratio, or by the gradient ratio (``tools/benchmark_distill.py --probe``);
the gradient ratio says what the optimizer feels, which a loss ratio hides when the terms scale
differently.
Works for any MKD, mimic, FGD or MGD config (``tools/probe_distillation.py``: ``main``)."""
import argparse
import json
import math
from typing import Dict, List, Tuple

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from omegaconf import OmegaConf
from torch import nn

from mkd import FeatureDistillation
from mkd.engine.datasets import check_training_data
from mkd.engine.overrides import apply_known_overrides
from mkd.engine.train import dataset_names

__all__ = ["build_at_initialisation", "gradient_ratio", "probe"]


def build_at_initialisation(cfg) -> Tuple[nn.Module, object]:
    """``cfg.model`` in training mode on ``cfg.train.device`` and an iterator over
    ``cfg.dataloader.train``, both from seed 0: every config probed sees the same batches."""
    seed_all_rng(0)
    model = instantiate(cfg.model).to(cfg.train.device).train()
    return model, iter(instantiate(cfg.dataloader.train))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.inf


def _norm(grads) -> float:
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))


def gradient_ratio(model: FeatureDistillation, batch: List[Dict]) -> Dict[str, object]:
    """One training forward of ``batch`` and the gradients, without touching ``.grad``, that
    its task and its distillation losses send into the student: into the FPN's outputs (every
    backbone call of the step together: with ``task_pass="clean"`` the task loss reaches the
    clean pass's, the distillation the masked pass's) and into the bottom-up network's
    parameters (which both passes share). Distillation terms are the distiller's outputs."""
    if not isinstance(model, FeatureDistillation):
        raise ValueError(f"The probe compares a distillation with its task: the model must be "
                         f"MKD (an MKD, mimic, FGD or MGD config), got {type(model).__name__}")
    backbone = model.student.backbone
    outputs, distilled = [], set()
    hooks = [
        backbone.register_forward_hook(lambda module, inputs, output: outputs.extend(
            v for v in output.values() if v.requires_grad)),
        model.distiller.register_forward_hook(lambda module, inputs, output: distilled.update(
            output)),
    ]
    try:
        losses = model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    bottom_up = getattr(backbone, "bottom_up", None) or getattr(backbone, "net", backbone)
    parameters = [p for p in bottom_up.parameters() if p.requires_grad]
    sums = {"task": sum(v for k, v in losses.items() if k not in distilled),
            "distillation": sum(v for k, v in losses.items() if k in distilled)}
    result = {"losses": {k: float(v) for k, v in losses.items()}}
    for i, (name, total) in enumerate(sums.items()):
        grads = torch.autograd.grad(total, outputs + parameters, retain_graph=i == 0,
                                    allow_unused=True)
        result[f"{name}_loss"] = float(total)
        result[f"{name}_fpn_grad"] = _norm(grads[:len(outputs)])
        result[f"{name}_bottom_up_grad"] = _norm(grads[len(outputs):])
    return result


def probe(cfg, batches: int) -> Dict[str, object]:
    """``gradient_ratio`` on the first ``batches`` training batches of a config at
    initialisation: each loss (``losses``), the task and distillation sums and gradient norms
    averaged over the batches, and the distillation-to-task ratios of those means
    (``loss_ratio``, ``fpn_grad_ratio``, ``bottom_up_grad_ratio``). The model is not updated."""
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    model, loader = build_at_initialisation(cfg)
    means: Dict[str, float] = {}
    losses: Dict[str, float] = {}
    with EventStorage():
        for _ in range(batches):
            measured = gradient_ratio(model, next(loader))
            for key, value in measured.pop("losses").items():
                losses[key] = losses.get(key, 0.0) + value / batches
            for key, value in measured.items():
                means[key] = means.get(key, 0.0) + value / batches
    ratios = {f"{name}_ratio": _ratio(means[f"distillation_{name}"], means[f"task_{name}"])
              for name in ("loss", "fpn_grad", "bottom_up_grad")}
    return {"batches": batches, "losses": losses, **means, **ratios}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="How hard a distillation config pulls next to its task, at initialisation.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
