"""tools/train_net.py end to end: train, evaluate, resume and fail clearly, on a tiny dataset.

Uses the built-in R18 config as is (only command-line overrides), with the built-in dataset
names re-registered on a few generated images so a run takes seconds.
"""
import json
import math
import os

import pytest
import torch
from detectron2.data import MetadataCatalog

from mkd.engine import train as train_net
from tests.helpers import REPO, train_net_setup

CONFIG = REPO / "configs" / "builtin" / "retinanet_R18_scratch.py"


def setup(output_dir, *overrides, resume=False, eval_only=False):
    # A 3-iteration model scores below the default 0.05; keep its boxes so AP is defined.
    base = ["dataloader.train.total_batch_size=2", "model.test_score_thresh=0.0"]
    return train_net_setup(CONFIG, output_dir, base + list(overrides), resume, eval_only)


@pytest.mark.slow
def test_train_then_evaluate(tiny_digits, tmp_path):
    args, cfg = setup(tmp_path)
    trainer = train_net.do_train(args, cfg)
    assert trainer.iter == 3
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    # Every loss term and the final evaluation reach the writers.
    logged = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert {"loss_cls", "loss_box_reg", "lr", "bbox/AP"} <= set().union(*logged)

    results = train_net.do_test(cfg, trainer.model)
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert all(math.isfinite(results["bbox"][k]) for k in ("AP", "AP50", "AP75"))

    checkpoint = str(tmp_path / "model_final.pth")
    args, cfg = setup(tmp_path / "eval", f"train.init_checkpoint={checkpoint}", eval_only=True)
    assert train_net.main(args)["bbox"] == pytest.approx(results["bbox"], nan_ok=True)


@pytest.mark.slow
def test_resume_continues_from_saved_iteration(tiny_digits, tmp_path):
    args, cfg = setup(tmp_path, "train.max_iter=2", "dataloader.evaluator=null")
    train_net.do_train(args, cfg)
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 1

    args, cfg = setup(tmp_path, "train.max_iter=4", "dataloader.evaluator=null", resume=True)
    trainer = train_net.do_train(args, cfg)
    assert (trainer.start_iter, trainer.iter) == (2, 4)


def test_missing_coco_is_a_clear_error(tiny_digits, tmp_path, monkeypatch):
    # Detectron2 registered COCO under $DETECTRON2_DATASETS, default ./datasets, at import.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    if os.path.exists(MetadataCatalog.get("coco_2017_train").json_file):
        pytest.skip("COCO is installed here")
    args, cfg = setup(tmp_path / "out", "dataloader.train.dataset.names=coco_2017_train")
    with pytest.raises(FileNotFoundError, match="coco_2017_train.*DETECTRON2_DATASETS"):
        train_net.do_train(args, cfg)
