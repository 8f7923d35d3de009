"""Optimizer parameter groups for a distillation model: the distiller's own learning rate and,
optionally, its own update rule.

MKD's decoder is a transformer trained from scratch by the detector's SGD. The spec is silent on
its optimisation, so both are knobs: ``optimizer.params.distiller_lr_factor`` (1 keeps
Detectron2's single learning rate) and ``optimizer.params.distiller_adamw`` with the optimizer
``SGDWithAdamWGroups`` (transformers are trained with AdamW; the detector keeps its SGD). The
measurements are in docs/ablations.md.
"""
from typing import Any, Dict, List

import torch
from detectron2.solver.build import get_default_optimizer_params
from torch import nn

__all__ = ["distillation_param_groups", "SGDWithAdamWGroups"]


def distillation_param_groups(model: nn.Module, base_lr: float, distiller_lr_factor: float = 1.0,
                              distiller_adamw: bool = False, **kwargs) -> List[Dict[str, Any]]:
    """Detectron2's ``get_default_optimizer_params(model, base_lr, **kwargs)``, with every
    parameter of ``model.distiller`` (decoder, adapters, global-loss blocks) in groups of their
    own whose learning rate is ``distiller_lr_factor`` times their group's, and which
    ``SGDWithAdamWGroups`` updates with AdamW when ``distiller_adamw``.

    ``base_lr`` must be the optimizer's ``lr`` (pass ``"${optimizer.lr}"``): a group without its
    own ``lr`` would otherwise take the optimizer's unscaled one.
    """
    if distiller_lr_factor <= 0:
        raise ValueError(f"optimizer.params.distiller_lr_factor={distiller_lr_factor}: it scales "
                         "the distiller's learning rate and must be > 0 (1 leaves it unchanged).")
    groups = get_default_optimizer_params(model, base_lr=base_lr, **kwargs)
    if distiller_lr_factor == 1.0 and not distiller_adamw:
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
            split.append({**group, "params": own, "lr": group["lr"] * distiller_lr_factor,
                          **({"adamw": True} if distiller_adamw else {})})
    return split


class SGDWithAdamWGroups(torch.optim.Optimizer):
    """SGD with momentum (the detector's recipe: ``torch.optim.SGD``'s update) for every group,
    except groups with ``adamw=True``, which get ``torch.optim.AdamW``'s update (decoupled weight
    decay). One optimizer, so Detectron2's trainer, LR scheduler (which scales every group's
    ``lr``) and checkpointer need nothing else. ``distillation_param_groups(...,
    distiller_adamw=True)`` marks the distiller's groups."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = False, betas=(0.9, 0.999), eps: float = 1e-8):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                        betas=tuple(betas), eps=eps, adamw=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            update = self._adamw if group["adamw"] else self._sgd
            for p in group["params"]:
                if p.grad is not None:
                    update(p, p.grad, self.state[p], group)
        return loss

    @staticmethod
    def _sgd(p, grad, state, group):
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        if group["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.clone()
            else:
                state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
            buffer = state["momentum_buffer"]
            grad = grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
        p.add_(grad, alpha=-group["lr"])

    @staticmethod
    def _adamw(p, grad, state, group):
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        p.mul_(1 - group["lr"] * group["weight_decay"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = group["lr"] / (1 - beta1 ** state["step"])
        denominator = (state["exp_avg_sq"] / (1 - beta2 ** state["step"])).sqrt().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denominator, value=-step_size)
