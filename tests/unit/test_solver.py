import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.solver import LRMultiplier, get_default_optimizer_params

from mkd.engine.overrides import apply_known_overrides
from mkd.solver import distillation_param_groups
from tests import helpers
from tests.helpers import make_mkd, train_step

# What the benchmark's decoder-LR ablation and a user's command line write.
FACTOR_OVERRIDES = ["optimizer.params._target_=mkd.solver.distillation_param_groups",
                    "+optimizer.params.base_lr=${optimizer.lr}",
                    "+optimizer.params.distiller_lr_factor=10"]


def _lrs(optimizer, model):
    by_param = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    distiller = {id(p) for p in model.distiller.parameters()}
    inside = {lr for i, lr in by_param.items() if i in distiller}
    outside = {lr for i, lr in by_param.items() if i not in distiller}
    return by_param, inside, outside


def test_distiller_lr_factor_scales_only_the_distillers_groups_from_a_lazy_config(tmp_path):
    model = make_mkd(tmp_path)
    cfg = LazyConfig.load("configs/shapes/mkd.py")
    cfg = apply_known_overrides(cfg, FACTOR_OVERRIDES + ["optimizer.lr=0.02"], "mkd.py")
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)

    by_param, inside, outside = _lrs(optimizer, model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert set(by_param) == {id(p) for p in trainable}  # every trainable parameter, once
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
    # Both follow the overridden lr.
    assert len(inside) == 1 and inside.pop() == pytest.approx(0.2) and outside == {0.02}
    # Weight decay stays Detectron2's: none on norms, inside the distiller too.
    decoder_norm = model.distiller.decoder.norm.weight
    assert [g["weight_decay"] for g in optimizer.param_groups
            if any(p is decoder_norm for p in g["params"])] == [0.0]

    # The LR schedule scales every group from its own start (LRMultiplier keeps the ratio).
    scheduler = instantiate(cfg.lr_multiplier)
    lr_scheduler = LRMultiplier(optimizer, multiplier=scheduler, max_iter=cfg.train.max_iter)
    for _ in range(3):
        train_step(model)
        optimizer.step()
        optimizer.zero_grad()
        lr_scheduler.step()
    _, inside, outside = _lrs(optimizer, model)
    (lr_in,), (lr_out,) = inside, outside
    assert lr_out < 0.02 and lr_in == pytest.approx(10 * lr_out)


def test_factor_one_is_detectron2s_default_groups(tmp_path):
    model = make_mkd(tmp_path)
    ours = distillation_param_groups(model, base_lr=0.01, weight_decay=1e-4, weight_decay_norm=0)
    theirs = get_default_optimizer_params(model, base_lr=0.01, weight_decay=1e-4,
                                          weight_decay_norm=0)
    assert [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in ours] == \
        [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in theirs]


def test_bad_factor_and_plain_detector_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"distiller_lr_factor=0.*must be > 0"):
        distillation_param_groups(make_mkd(tmp_path), base_lr=0.01, distiller_lr_factor=0)
    with pytest.raises(ValueError, match=r"RetinaNet has none\. Set the factor to 1"):
        distillation_param_groups(helpers.build(), base_lr=0.01, distiller_lr_factor=3)
    assert isinstance(distillation_param_groups(helpers.build(), base_lr=0.01)[0]["params"][0],
                      torch.nn.Parameter)


def _two_groups(seed=0):
    torch.manual_seed(seed)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    return a, b


def _steps(optimizer, modules, steps=4):
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        optimizer.zero_grad()
        modules[1](modules[0](x).tanh()).pow(2).sum().backward()
        optimizer.step()
    return [p.detach().clone() for m in modules for p in m.parameters()]


def test_sgd_with_adamw_groups_updates_each_group_as_torchs_optimizers_do():
    from mkd.solver import SGDWithAdamWGroups

    a, b = _two_groups()
    ours = SGDWithAdamWGroups([{"params": a.parameters()},
                               {"params": b.parameters(), "adamw": True, "lr": 1e-3,
                                "weight_decay": 0.05}], lr=0.1, momentum=0.9, weight_decay=1e-4)
    got = _steps(ours, (a, b))
    a2, b2 = _two_groups()
    sgd = torch.optim.SGD(a2.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    adamw = torch.optim.AdamW(b2.parameters(), lr=1e-3, weight_decay=0.05)

    class Both:
        def zero_grad(self):
            sgd.zero_grad(), adamw.zero_grad()

        def step(self):
            sgd.step(), adamw.step()

    expected = _steps(Both(), (a2, b2))
    for ours_p, torch_p in zip(got, expected):
        torch.testing.assert_close(ours_p, torch_p, rtol=1e-5, atol=1e-6)


def test_distiller_adamw_groups_from_a_lazy_config_and_the_lr_schedule(tmp_path):
    model = make_mkd(tmp_path)
    cfg = LazyConfig.load("configs/shapes/mkd.py")
    overrides = ["optimizer._target_=mkd.solver.SGDWithAdamWGroups",
                 "optimizer.params._target_=mkd.solver.distillation_param_groups",
                 "+optimizer.params.base_lr=${optimizer.lr}",
                 "+optimizer.params.distiller_lr_factor=0.05",
                 "+optimizer.params.distiller_adamw=True"]
    cfg = apply_known_overrides(cfg, overrides, "mkd.py")
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    distiller = {id(p) for p in model.distiller.parameters()}
    for group in optimizer.param_groups:
        inside = {id(p) in distiller for p in group["params"]}
        assert len(inside) == 1  # a group is wholly the distiller's or wholly not
        assert group["adamw"] == inside.pop()
    # Detectron2's LR scheduler scales the AdamW groups with the others.
    from fvcore.common.param_scheduler import ConstantParamScheduler

    scheduler = LRMultiplier(optimizer, ConstantParamScheduler(0.5), max_iter=10)
    lrs = {g["adamw"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {False: pytest.approx(0.5 * cfg.optimizer.lr),
                   True: pytest.approx(0.5 * 0.05 * cfg.optimizer.lr)}
    train_step(model)
    optimizer.step()
    scheduler.step()
    adam_state = [optimizer.state[p] for g in optimizer.param_groups if g["adamw"]
                  for p in g["params"] if p.grad is not None]
    assert adam_state and all(s["step"] == 1 and "exp_avg_sq" in s for s in adam_state)
