import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

import tiny
from conftest import REPO, load_tool
from test_meta_arch import train_step

CONFIG = str(REPO / "configs/coco/retinanet_R50_to_R18_mkd_2x.py")
SMALL = ["model.teacher_weights=null", "model.student_weights=null",
         "model.distiller.decoder.width=32", "model.distiller.decoder.num_heads=4",
         "model.student.num_classes=3", "model.teacher.num_classes=3"]


def test_exported_student_loads_into_plain_detectron2_with_equal_outputs(tmp_path):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), SMALL)
    model = instantiate(cfg.model)
    torch.save({"model": model.teacher.state_dict()}, tmp_path / "teacher.pth")
    model.load_teacher(str(tmp_path / "teacher.pth"))
    train_step(model, tiny.batch(with_masks=False))  # so the student differs from its init
    DetectionCheckpointer(model, str(tmp_path)).save("mkd")

    load_tool("export_student").main(["--config-file", CONFIG, "--checkpoint", str(tmp_path / "mkd.pth"),
                  "--output", str(tmp_path / "student.pth"), *SMALL])

    plain = instantiate(cfg.model.student)  # plain Detectron2: no MKD code involved
    exported = torch.load(tmp_path / "student.pth", map_location="cpu")["model"]
    assert exported.keys() == plain.state_dict().keys()
    DetectionCheckpointer(plain).load(str(tmp_path / "student.pth"))
    for name, value in plain.state_dict().items():
        assert torch.equal(value, exported[name]), name
    model.eval(), plain.eval()
    inputs = tiny.batch(with_masks=False)
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
        load_tool("export_student").main(["--config-file", CONFIG, "--checkpoint", str(tmp_path / "mkd.pth"),
                      "--output", str(tmp_path / "student.pth"), *SMALL,
                      "model.student.backbone.bottom_up.stages.depth=34"])
    torch.save({"model": model.student.state_dict()}, tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="not an MKD training checkpoint"):
        load_tool("export_student").main(["--config-file", CONFIG, "--checkpoint", str(tmp_path / "plain.pth"),
                      "--output", str(tmp_path / "student.pth"), *SMALL])
