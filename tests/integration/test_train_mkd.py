"""MKD through tools/train_net.py on the built-in dataset: train, evaluate the student, resume."""
import json
import math

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from mkd import PatchMasker
from mkd.engine import train as train_net
from tests.helpers import REPO, train_net_setup

CONFIG = REPO / "configs" / "builtin" / "retinanet_R50_to_R18_mkd.py"


@pytest.fixture(scope="module")
def teacher_weights(module_tmp):
    """A teacher checkpoint of the config's teacher model (untrained: the mechanics suffice)."""
    path = module_tmp("teacher") / "teacher.pth"
    model = instantiate(LazyConfig.load(str(CONFIG)).model.teacher)
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def setup(output_dir, teacher, *overrides, resume=False, eval_only=False):
    base = [
        f"model.teacher_weights={teacher}",
        "dataloader.train.total_batch_size=8",  # every tiny-dataset image in every batch
        "model.student.test_score_thresh=0.0",
        "model.distiller.decoder.width=32",
    ]
    return train_net_setup(CONFIG, output_dir, base + list(overrides), resume, eval_only)


@pytest.mark.slow
def test_mkd_trains_logs_every_loss_and_evaluates_the_student(tiny_digits, teacher_weights,
                                                               tmp_path):
    args, cfg = setup(tmp_path, teacher_weights)
    trainer = train_net.do_train(args, cfg)
    logged = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    keys = set().union(*logged)
    assert {"loss_cls", "loss_box_reg", "loss_mkd_feat", "loss_mkd_global", "bbox/AP"} <= keys
    assert all(math.isfinite(x["total_loss"]) for x in logged if "total_loss" in x)

    results = train_net.do_test(cfg, trainer.model)
    # --eval-only needs no teacher: a missing teacher file must not matter.
    checkpoint = tmp_path / "model_final.pth"
    args, cfg = setup(tmp_path / "eval", "/nonexistent/teacher.pth",
                      f"train.init_checkpoint={checkpoint}", eval_only=True)
    assert train_net.main(args)["bbox"] == pytest.approx(results["bbox"], nan_ok=True)


def test_eval_only_refuses_a_missing_or_foreign_checkpoint(tiny_digits, tmp_path):
    args, _ = setup(tmp_path, "unused", "train.init_checkpoint=/nonexistent.pth", eval_only=True)
    with pytest.raises(FileNotFoundError, match="point train.init_checkpoint"):
        train_net.main(args)
    torch.save({"model": {"backbone.x": torch.zeros(1)}}, tmp_path / "foreign.pth")
    args, _ = setup(tmp_path, "unused", f"train.init_checkpoint={tmp_path / 'foreign.pth'}",
                    eval_only=True)
    with pytest.raises(RuntimeError, match=r"student\.\* parameters/buffers missing"):
        train_net.main(args)


class _Draws:
    """Records every mask drawn: (step, image key) -> grid."""

    def __init__(self, monkeypatch):
        self.grids = {}
        original = PatchMasker.__call__

        def record(masker, image_sizes, image_keys, step, device=None):
            mask = original(masker, image_sizes, image_keys, step, device)
            for key, grid in zip(image_keys, mask.grid):
                self.grids[(step, key)] = grid.clone()
            return mask

        monkeypatch.setattr(PatchMasker, "__call__", record)


def _state(trainer):
    model = trainer.model
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.state_dict()["hooks"],
    }


def _assert_equal(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_equal(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal(x, y)
    else:
        assert a == b


@pytest.mark.slow
def test_resume_restores_every_state_and_draws_the_uninterrupted_masks(
    tiny_digits, teacher_weights, tmp_path, monkeypatch
):
    draws = _Draws(monkeypatch)
    # One training scale: a mask is drawn for an image at its (augmented) size.
    quiet_fixed_scale = ["dataloader.evaluator=null",
               "dataloader.train.mapper.augmentations.0.short_edge_length=[160]"]
    # The seed of the first run is saved with its checkpoint; resumed runs leave it random, so a
    # resume that did not restore it would draw other masks.
    seeded = ["train.seed=0"]
    args, cfg = setup(tmp_path / "straight", teacher_weights, "train.max_iter=4", *quiet_fixed_scale,
                      *seeded)
    train_net.do_train(args, cfg)
    straight = dict(draws.grids)

    draws.grids.clear()
    out = tmp_path / "interrupted"
    args, cfg = setup(out, teacher_weights, "train.max_iter=2", *quiet_fixed_scale, *seeded)
    saved = _state(train_net.do_train(args, cfg))
    # Resume without training further: everything must be as it was saved.
    args, cfg = setup(out, teacher_weights, "train.max_iter=2", *quiet_fixed_scale, resume=True)
    restored = train_net.do_train(args, cfg)
    assert restored.start_iter == 2
    _assert_equal(_state(restored), saved)
    names = [k.split(".")[0] for k in saved["model"]]
    assert {"student", "distiller", "mask_step"} <= set(names)
    assert int(saved["model"]["mask_step"]) == 2

    args, cfg = setup(out, teacher_weights, "train.max_iter=4", *quiet_fixed_scale, resume=True)
    train_net.do_train(args, cfg)
    resumed = {k: v for k, v in draws.grids.items() if k[0] >= 2}
    assert resumed and set(resumed) == {k for k in straight if k[0] >= 2}
    for key, grid in resumed.items():
        assert torch.equal(grid, straight[key]), key
