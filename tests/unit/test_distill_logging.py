"""Per-level distillation losses and MKD's reconstruction correlation in Detectron2's event
storage: at the distiller's log period only, equal to the terms of the losses it returns."""
import json
import math

import pytest
import torch
from detectron2.engine import SimpleTrainer, hooks
from detectron2.utils.events import EventStorage, JSONWriter
from torch import nn

from mkd import FeatureLoss, GlobalLoss, MKDDistiller, PatchMasker
from mkd.modeling.losses import spatial_correlation
from tests import helpers
from tests.helpers import DISTILLERS, build_distiller, context, features, make_mkd, mkd_distiller

LEVELS = ["p3", "p4", "p5", "p6", "p7"]  # RetinaNet's, as in test_baselines


def distill_scalars(storage):
    """{name: {iteration: value}} of the ``distill/`` scalars in ``storage``."""
    return {name: dict((int(i), v) for v, i in buffer.values())
            for name, buffer in storage.histories().items() if name.startswith("distill/")}


def test_mkd_logs_every_level_at_the_period_and_not_between(tmp_path):
    model = make_mkd(tmp_path, distiller=MKDDistiller(
        decoder=mkd_distiller().decoder, feature_loss=FeatureLoss(), global_loss=GlobalLoss(),
        feature_weight=2.0, global_weight=0.5, log_period=2))
    returned = {}
    with EventStorage(0) as storage:
        for step in range(4):
            storage.iter = step
            returned[step] = {k: float(v) for k, v in model(helpers.batch(seed=step)).items()}
    logged = distill_scalars(storage)
    names = {f"distill/{level}/{loss}" for level in LEVELS
             for loss in ("loss_mkd_feat", "loss_mkd_global")}
    # 64x96 and 80x64 images pad to 96x96: P7 is a single position, without a correlation.
    names |= {f"distill/{level}/r" for level in LEVELS[:-1]}
    assert set(logged) == names
    assert all(set(by_iter) == {0, 2} for by_iter in logged.values())
    for step in (0, 2):
        for loss in ("loss_mkd_feat", "loss_mkd_global"):
            levels = [logged[f"distill/{level}/{loss}"][step] for level in LEVELS]
            # At P7's single position per-channel standardisation leaves nothing to compare.
            assert all(v > 0 for v in levels[:-1]) and levels[-1] >= 0
            assert sum(levels) == pytest.approx(returned[step][loss], rel=1e-5)
        # A decoder at initialisation reconstructs little of the teacher.
        assert all(-1 <= logged[f"distill/{level}/r"][step] < 0.9 for level in LEVELS[:-1])


def test_logging_changes_no_loss_and_off_iterations_compute_no_correlation(tmp_path,
                                                                           monkeypatch):
    """Logging reads what the loss computed (nothing drawn at random twice, no gradient); the
    correlation is computed on logging iterations only."""
    batch = helpers.batch()
    losses = {}
    for period in (0, 1):
        torch.manual_seed(0)  # two identical models (a step updates RetinaNet's loss normaliser)
        model = make_mkd(tmp_path, masker=PatchMasker(patch_size=32, mask_ratio=0.5, seed=0))
        model.distiller.log_period = period
        with EventStorage(0) as storage:
            losses[period] = model(batch)
        assert bool(distill_scalars(storage)) == bool(period)
    for name, value in losses[0].items():
        assert torch.equal(value, losses[1][name]), name

    def refuse(*args):
        raise AssertionError("the correlation was computed on an iteration that does not log")

    monkeypatch.setattr("mkd.modeling.distillers.mkd.spatial_correlation", refuse)
    model.distiller.log_period = 20
    with EventStorage(19):
        model(batch)


class EchoDecoder(nn.Module):
    """Stands in for MKD's decoder: returns the features it is given, whatever the mask."""

    def build_distiller(self, student_shapes, teacher_shapes):
        return self

    def forward(self, features, mask):
        return features


@pytest.mark.parametrize("reconstruction,expected", [("teacher", 1.0), ("noise", 0.0)])
def test_r_is_one_for_the_teacher_and_near_zero_for_noise(reconstruction, expected):
    distiller = MKDDistiller(decoder=EchoDecoder(), feature_loss=FeatureLoss(), log_period=1)
    teacher = {"p3": torch.randn(2, 16, 32, 32), "p4": torch.randn(2, 16, 16, 16)}
    student = teacher if reconstruction == "teacher" else {
        k: torch.randn_like(v) for k, v in teacher.items()}
    mkd_context = context()
    mkd_context.mask = object()  # read only for hidden-position losses
    with EventStorage(0) as storage:
        distiller(student, teacher, mkd_context)
    for level in teacher:
        r = storage.history(f"distill/{level}/r").latest()
        assert r == pytest.approx(expected, abs=0.05 if expected == 0 else 1e-5)


def test_spatial_correlation_is_pearsons_per_channel_averaged():
    x = torch.randn(2, 3, 8, 8)
    assert float(spatial_correlation(x, 3 * x + 2)) == pytest.approx(1.0, abs=1e-6)
    assert float(spatial_correlation(x, -x)) == pytest.approx(-1.0, abs=1e-6)
    flat = x.flatten(2)
    centred = flat - flat.mean(-1, keepdim=True)
    y = torch.randn(2, 3, 8, 8)
    other = y.flatten(2) - y.flatten(2).mean(-1, keepdim=True)
    pearson = (centred * other).sum(-1) / (centred.norm(dim=-1) * other.norm(dim=-1))
    assert float(spatial_correlation(x, y)) == pytest.approx(float(pearson.mean()), abs=1e-6)
    # A channel constant over the map has no correlation: it counts as 0, not NaN.
    constant = x.clone()
    constant[:, 0] = 5.0
    assert math.isfinite(float(spatial_correlation(constant, x)))
    assert float(spatial_correlation(constant, x)) == pytest.approx(2 / 3, abs=1e-6)


@pytest.mark.parametrize("name", list(DISTILLERS))
def test_baselines_log_per_level_terms_that_sum_to_their_losses(name):
    distiller = build_distiller(name, log_period=3)
    student, teacher = features(16), features(32, seed=1)
    returned = {}
    for step, logs in ((4, False), (3, True)):
        torch.manual_seed(0)  # MGD draws its masks at random
        with EventStorage(step) as storage:
            losses = returned[step] = distiller(student, teacher, context())
        logged = distill_scalars(storage)
        if not logs:
            assert logged == {}
            continue
        # Logging draws nothing at random and changes no loss.
        assert all(torch.equal(v, returned[4][k]) for k, v in losses.items())
        assert set(logged) == {f"distill/{level}/{loss}" for level in LEVELS
                               for loss in DISTILLERS[name][1]}
        for loss, value in losses.items():
            total = sum(logged[f"distill/{level}/{loss}"][step] for level in LEVELS)
            assert total == pytest.approx(float(value), rel=1e-5, abs=1e-12), loss
    # Called outside a trainer (no event storage), a distiller logs nothing and works.
    assert set(distiller(student, teacher, context())) == DISTILLERS[name][1]


def test_refuses_a_negative_period():
    with pytest.raises(ValueError, match="log_period must be >= 0"):
        build_distiller("mimic", log_period=-1)


def test_detectron2s_writer_puts_them_in_metrics_json_at_their_iterations(tmp_path):
    """A Detectron2 trainer with its JSON writer every iteration: the values appear in
    metrics.json at the iterations that logged them, and only there."""
    model = make_mkd(tmp_path)
    model.distiller.log_period = 2
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    trainer = SimpleTrainer(model, iter(lambda: helpers.batch(), None), optimizer)
    trainer.register_hooks([hooks.PeriodicWriter([JSONWriter(str(tmp_path / "metrics.json"))],
                                                 period=1)])
    trainer.train(0, 4)
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    logged = {x["iteration"] for x in lines if "distill/p3/r" in x}
    assert logged == {0, 2}
    by_iteration = {x["iteration"]: x for x in lines}
    assert {"distill/p4/loss_mkd_feat", "distill/p4/loss_mkd_global"} <= set(by_iteration[2])
    assert "distill/p4/loss_mkd_feat" not in by_iteration[3]
