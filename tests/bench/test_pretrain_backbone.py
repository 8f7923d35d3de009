"""tools/pretrain_backbone.py: crops of the train split only, a checkpoint that is exactly the
detector's bottom-up, and a cache keyed by the settings."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from mkd import load_verified_weights
from mkd_bench import pretrain as pretrain_backbone
from mkd_bench.datasets import register_builtin, split_paths
from mkd_bench.datasets.shapes import generate_dataset
from tests.helpers import REPO, run_tool

STUDENT = str(REPO / "configs" / "shapes" / "student.py")
TINY = pretrain_backbone.Settings(iters=2, batch_size=4, crop_size=32)


@pytest.fixture(scope="module")
def tiny_run(module_tmp):
    """The tool on 6 + 3 generated shapes images; the images it read, and the checkpoint."""
    root = str(module_tmp("shapes"))
    generate_dataset(root, seed=0, num_train=6, num_val=3, image_size=96, workers=1)
    previous = MetadataCatalog.get("mkd_shapes_train").dataset_root
    register_builtin(root, dataset="shapes")
    output = module_tmp("pretrained")
    read = []
    with pytest.MonkeyPatch.context() as patch:
        original = pretrain_backbone.utils.read_image
        patch.setattr(pretrain_backbone.utils, "read_image",
                      lambda name, **kw: read.append(name) or original(name, **kw))
        path = pretrain_backbone.pretrain(STUDENT, TINY, str(output))
    yield dict(root=root, output=str(output), read=read, path=path)
    register_builtin(previous, dataset="shapes")


def test_checkpoint_is_exactly_the_detectors_bottom_up_and_loads_whole(tiny_run):
    detector = instantiate(LazyConfig.load(STUDENT).model)
    state = torch.load(tiny_run["path"], map_location="cpu")["model"]
    expected = {f"backbone.bottom_up.{k}" for k in detector.backbone.bottom_up.state_dict()}
    assert set(state) == expected
    load_verified_weights(detector, tiny_run["path"], "student",
                          required_prefix="backbone.bottom_up.")
    name = "backbone.bottom_up.stem.conv1.weight"
    assert torch.equal(detector.state_dict()[name], state[name])
    # The fixed path configs load points at the cached file.
    link = os.path.join(tiny_run["output"], "shapes_R18.pth")
    assert os.path.realpath(link) == os.path.realpath(tiny_run["path"])
    with open(os.path.join(os.path.dirname(tiny_run["path"]), "accuracy.json")) as f:
        report = json.load(f)
    assert 0.0 <= report["held_out_accuracy"] <= 1.0 and report["held_out_crops"] > 0


def test_crops_come_only_from_the_train_split(tiny_run):
    _, train_images = split_paths(tiny_run["root"], "train")
    assert len(tiny_run["read"]) == 6
    assert all(os.path.dirname(name) == train_images for name in tiny_run["read"])
    records = DatasetCatalog.get("mkd_shapes_train")
    crops, labels, owners = pretrain_backbone.instance_crops(records, 32, 0.25, "BGR")
    annotations = [a for r in records for a in r["annotations"]]
    assert crops.shape == (len(annotations), 3, 32, 32) and crops.dtype == torch.uint8
    assert labels.tolist() == [a["category_id"] for a in annotations]
    assert sorted(set(owners.tolist())) == list(range(6))


def test_same_settings_reuse_the_cache_other_settings_train_anew(tiny_run, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained again despite a cached result")

    monkeypatch.setattr(pretrain_backbone, "_train", refuse)
    assert pretrain_backbone.pretrain(STUDENT, TINY, tiny_run["output"]) == tiny_run["path"]
    with pytest.raises(AssertionError, match="trained again"):
        pretrain_backbone.pretrain(STUDENT, pretrain_backbone.Settings(iters=3, batch_size=4,
                                                                       crop_size=32),
                                   tiny_run["output"])


def test_a_crop_is_the_box_with_its_context(tmp_path):
    """A white 20-px square on black: with no context the crop is all square; with 0.5 of
    context on each side the square fills the central half."""
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[10:30, 20:40] = 255
    Image.fromarray(pixels).save(tmp_path / "square.png")
    record = {"file_name": str(tmp_path / "square.png"), "annotations": [
        {"bbox": [20, 10, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 3}]}
    tight, labels, _ = pretrain_backbone.instance_crops([record], 16, 0.0, "BGR")
    assert labels.tolist() == [3]
    assert tight[0, :, 1:-1, 1:-1].float().mean() > 250  # the outermost pixels blend
    loose, _, _ = pretrain_backbone.instance_crops([record], 16, 0.5, "BGR")
    assert loose[0, :, 5:11, 5:11].float().mean() > 250
    assert loose[0, :, :3].float().mean() < 5 and loose[0, :, :, -3:].float().mean() < 5


def test_a_test_split_among_the_train_data_is_refused():
    cfg = LazyConfig.load(STUDENT)
    cfg.dataloader.test.dataset.names = cfg.dataloader.train.dataset.names
    with pytest.raises(ValueError, match="leak the evaluation data.*distinct"):
        pretrain_backbone.train_dataset_names(cfg)


def test_a_segmentation_config_is_refused_before_anything_is_written(tmp_path):
    """A segmentor has no boxes to crop: the error names the detector config to pretrain."""
    config = str(REPO / "configs" / "shapes_seg" / "student.py")
    with pytest.raises(ValueError, match="SemanticSegmentor, not a detector with num_classes.*"
                                         "configs/shapes/student.py"):
        pretrain_backbone.pretrain(config, TINY, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_the_tool_is_the_pretrainings_command_line(capsys):
    """tools/pretrain_backbone.py only runs the harness: every setting is an option."""
    with pytest.raises(SystemExit) as exited:
        run_tool("pretrain_backbone", ["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert "--config-file" in printed
    assert all(f"--{name}" in printed for name in ("iters", "batch-size", "crop-size", "link"))
