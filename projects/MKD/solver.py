"""Optimizer parameter groups for a distillation model: the distiller's own learning rate.

MKD's decoder is a transformer trained from scratch by the detector's SGD. The spec is silent on
its optimisation, so its learning rate is a knob: ``optimizer.params.distiller_lr_factor`` (1
keeps Detectron2's single learning rate). On the shapes proxy, x10 made the decoder fit the
teacher better and the student no better (README, "Ablations on the shapes proxy").
"""
from typing import Any, Dict, List

from torch import nn

from detectron2.solver.build import get_default_optimizer_params

__all__ = ["distillation_param_groups"]


def distillation_param_groups(model: nn.Module, base_lr: float, distiller_lr_factor: float = 1.0,
                              **kwargs) -> List[Dict[str, Any]]:
    """Detectron2's ``get_default_optimizer_params(model, base_lr, **kwargs)``, with every
    parameter of ``model.distiller`` (decoder, adapters, global-loss blocks) in groups of their
    own whose learning rate is ``distiller_lr_factor`` times their group's.

    ``base_lr`` must be the optimizer's ``lr`` (pass ``"${optimizer.lr}"``): a group without its
    own ``lr`` would otherwise take the optimizer's unscaled one.
    """
    if distiller_lr_factor <= 0:
        raise ValueError(f"optimizer.params.distiller_lr_factor={distiller_lr_factor}: it scales "
                         "the distiller's learning rate and must be > 0 (1 leaves it unchanged).")
    groups = get_default_optimizer_params(model, base_lr=base_lr, **kwargs)
    if distiller_lr_factor == 1.0:
        return groups
    distiller = getattr(model, "distiller", None)
    if not isinstance(distiller, nn.Module):
        raise ValueError(f"optimizer.params.distiller_lr_factor={distiller_lr_factor} needs a "
                         f"distillation model (MKD) with a `distiller`; {type(model).__name__} "
                         "has none. Set the factor to 1 for a plain detector.")
    in_distiller = {id(p) for p in distiller.parameters()}
    split: List[Dict[str, Any]] = []
    for group in groups:
        own = [p for p in group["params"] if id(p) in in_distiller]
        rest = [p for p in group["params"] if id(p) not in in_distiller]
        if rest:
            split.append({**group, "params": rest})
        if own:
            split.append({**group, "params": own, "lr": group["lr"] * distiller_lr_factor})
    return split
