"""tools/export_student.py: the student's weights and config, for plain Detectron2; and
tools/train_net.py --eval-only of an MKD config on either checkpoint."""
import os
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from mkd.engine import train as train_net
from tests import helpers
from tests.helpers import REPO, train_net_setup, train_step

CONFIG = str(REPO / "configs/coco/retinanet_R50_to_R18_mkd_2x.py")
SMALL = ["model.teacher_weights=null", "model.student_weights=null",
         "model.distiller.decoder.width=32", "model.distiller.decoder.num_heads=4",
         "model.student.num_classes=3", "model.teacher.num_classes=3"]


def test_exported_student_loads_into_plain_detectron2_with_equal_outputs(tmp_path):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), SMALL)
    model = instantiate(cfg.model)
    torch.save({"model": model.teacher.state_dict()}, tmp_path / "teacher.pth")
    model.load_teacher(str(tmp_path / "teacher.pth"))
    train_step(model, helpers.batch(with_masks=False))  # so the student differs from its init
    DetectionCheckpointer(model, str(tmp_path)).save("mkd")

    helpers.run_tool("export_student", ["--config-file", CONFIG, "--checkpoint",
                                      str(tmp_path / "mkd.pth"), "--output",
                                      str(tmp_path / "student.pth"), *SMALL])

    plain = instantiate(cfg.model.student)  # plain Detectron2: no MKD code involved
    exported = torch.load(tmp_path / "student.pth", map_location="cpu")["model"]
    assert exported.keys() == plain.state_dict().keys()
    DetectionCheckpointer(plain).load(str(tmp_path / "student.pth"))
    for name, value in plain.state_dict().items():
        assert torch.equal(value, exported[name]), name
    model.eval(), plain.eval()
    inputs = helpers.batch(with_masks=False)
    with torch.no_grad():
        for ours, theirs in zip(model(inputs), plain(inputs)):
            torch.testing.assert_close(ours["instances"].pred_boxes.tensor,
                                       theirs["instances"].pred_boxes.tensor, rtol=0, atol=0)
            torch.testing.assert_close(ours["instances"].scores, theirs["instances"].scores,
                                       rtol=0, atol=0)


def test_export_refuses_a_checkpoint_of_another_student(tmp_path):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), SMALL)
    model = instantiate(cfg.model)
    DetectionCheckpointer(model, str(tmp_path)).save("mkd")
    with pytest.raises(RuntimeError, match="does not fit cfg.model.student"):
        helpers.run_tool("export_student", ["--config-file", CONFIG, "--checkpoint",
                                          str(tmp_path / "mkd.pth"), "--output",
                                          str(tmp_path / "student.pth"), *SMALL,
                                          "model.student.backbone.bottom_up.stages.depth=34"])
    torch.save({"model": model.student.state_dict()}, tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="not an MKD training checkpoint"):
        helpers.run_tool("export_student", ["--config-file", CONFIG, "--checkpoint",
                                          str(tmp_path / "plain.pth"), "--output",
                                          str(tmp_path / "student.pth"), *SMALL])


def trained_mkd_checkpoint(tmp_path, overrides=SMALL):
    """An MKD checkpoint of CONFIG whose student took one step; the MKD model, in eval mode."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), list(overrides))
    model = instantiate(cfg.model)
    torch.save({"model": model.teacher.state_dict()}, tmp_path / "teacher.pth")
    model.load_teacher(str(tmp_path / "teacher.pth"))
    train_step(model, helpers.batch(with_masks=False))
    DetectionCheckpointer(model, str(tmp_path)).save("mkd")
    return model.eval()


#: Detectron2's tools/lazyconfig_train_net.py --eval-only, up to its evaluation (which needs
#: COCO): load the config, instantiate, move, wrap, load the weights. Then inference on a tiny
#: image. Importing mkd fails in this process, so nothing of it can be used.
PLAIN_DETECTRON2 = """
import sys
class NoMKD:
    def find_spec(self, name, path=None, target=None):
        if name == "mkd" or name.startswith("mkd."):
            raise ImportError("mkd is not available to plain Detectron2")
sys.meta_path.insert(0, NoMKD())
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine.defaults import create_ddp_model

cfg = LazyConfig.load(sys.argv[1])
model = instantiate(cfg.model)
model.to(cfg.train.device)
model = create_ddp_model(model)
DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
model.eval()
image = torch.load(sys.argv[2])
with torch.no_grad():
    instances = model([{"image": image, "height": image.shape[1], "width": image.shape[2]}])
instances = instances[0]["instances"]
torch.save({"scores": instances.scores, "boxes": instances.pred_boxes.tensor,
            "state": model.state_dict()}, sys.argv[3])
print(type(model).__name__, len(instances), "mkd" in sys.modules)
"""


def test_exported_pair_evaluates_in_plain_detectron2_without_mkd(tmp_path):
    overrides = SMALL + ["train.device=cpu", "model.student.test_score_thresh=0.0"]
    model = trained_mkd_checkpoint(tmp_path, overrides)
    helpers.run_tool("export_student", ["--config-file", CONFIG, "--checkpoint",
                                      str(tmp_path / "mkd.pth"), "--output",
                                      str(tmp_path / "out" / "student.pth"), *overrides])
    config = tmp_path / "out" / "student.yaml"
    assert config.is_file()  # beside the weights
    saved = LazyConfig.load(str(config))
    assert saved.train.init_checkpoint == str(tmp_path / "out" / "student.pth")
    assert saved.dataloader.test.dataset.names == "coco_2017_val"  # the run's evaluation

    image = helpers.batch(with_masks=False)[0]["image"]
    torch.save(image, tmp_path / "image.pt")
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_DETECTRON2, str(config), str(tmp_path / "image.pt"),
         str(tmp_path / "plain.pt")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-4000:]
    name, count, imported = result.stdout.split()[-3:]
    assert name == "RetinaNet" and int(count) > 0 and imported == "False"

    plain = torch.load(tmp_path / "plain.pt", map_location="cpu")
    exported = torch.load(tmp_path / "out" / "student.pth", map_location="cpu")["model"]
    assert plain["state"].keys() == exported.keys()
    assert all(torch.equal(plain["state"][k], v) for k, v in exported.items())
    with torch.no_grad():
        ours = model([{"image": image, "height": image.shape[1], "width": image.shape[2]}])
    ours = ours[0]["instances"]
    # The same detections (sorted: near-equal scores may swap places across thread counts).
    torch.testing.assert_close(plain["scores"].sort().values, ours.scores.sort().values,
                               rtol=1e-4, atol=1e-5)


def test_export_refuses_an_unknown_override(tmp_path):
    DetectionCheckpointer(instantiate(LazyConfig.apply_overrides(
        LazyConfig.load(CONFIG), SMALL).model), str(tmp_path)).save("mkd")
    with pytest.raises(KeyError, match=r"model\.student\.num_clases.*did you mean "
                                       r"model\.student\.num_classes"):
        helpers.run_tool("export_student", ["--config-file", CONFIG, "--checkpoint",
                                          str(tmp_path / "mkd.pth"), "--output",
                                          str(tmp_path / "student.pth"), *SMALL,
                                          "model.student.num_clases=3"])
    assert not (tmp_path / "student.pth").exists() and not (tmp_path / "student.yaml").exists()


def test_eval_only_of_an_mkd_config_takes_the_mkd_or_the_exported_checkpoint(tmp_path):
    model = trained_mkd_checkpoint(tmp_path)
    helpers.run_tool("export_student", ["--config-file", CONFIG, "--checkpoint",
                                      str(tmp_path / "mkd.pth"), "--output",
                                      str(tmp_path / "student.pth"), *SMALL])
    expected = model.student.state_dict()
    for checkpoint in ("mkd.pth", "student.pth"):
        _, cfg = train_net_setup(CONFIG, tmp_path / "eval", SMALL + [
            "train.device=cpu", f"train.init_checkpoint={tmp_path / checkpoint}"],
            eval_only=True)
        evaluated = train_net.build_for_evaluation(cfg).student.state_dict()
        assert all(torch.equal(evaluated[k], v) for k, v in expected.items()), checkpoint

    # A student with another class count fits neither form: refused, naming both.
    other = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), SMALL + [
        "model.student.num_classes=5"])
    torch.save({"model": instantiate(other.model.student).state_dict()}, tmp_path / "c5.pth")
    _, cfg = train_net_setup(CONFIG, tmp_path / "eval", SMALL + [
        "train.device=cpu", f"train.init_checkpoint={tmp_path / 'c5.pth'}"], eval_only=True)
    with pytest.raises(RuntimeError, match=r"do not fit.*or the student exported from one"):
        train_net.build_for_evaluation(cfg)
