"""tools/visualize_sem_seg.py (``mkd_bench.figures.sem_seg``): the predictions grid of semantic
segmentation models, each built as train_net.py --eval-only builds it, coloured one colour per
class with the ignored label grey."""
import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from mkd_bench.datasets import shapes
from mkd_bench.figures import sem_seg as vis
from tests.helpers import REPO, run_tool

SHAPES_SEG = REPO / "configs" / "shapes_seg"
VAL = "mkd_shapes_sem_seg_val"


def test_palette_gives_each_shapes_class_a_distinct_vivid_colour_and_background_black(
        shapes_root):  # noqa: F811
    colors = vis.palette(VAL)
    assert list(colors) == ["background", *shapes.CATEGORY_NAMES]
    assert colors["background"] == (0, 0, 0)
    values = list(colors.values())
    assert len(set(values)) == len(values)
    # No grey beside the ignored label's: a grey class would read as "ignored".
    assert all(max(c) - min(c) > 30 for c in values[1:]), values


def test_palette_keeps_the_colours_a_dataset_declares():
    name = "test_visualize_sem_seg_coloured"
    MetadataCatalog.get(name).set(stuff_classes=["road", "sky"],
                                  stuff_colors=[[128, 64, 128], [70, 130, 180]])
    try:
        assert vis.palette(name) == {"road": (128, 64, 128), "sky": (70, 130, 180)}
    finally:
        MetadataCatalog.remove(name)


def test_colorize_paints_each_label_its_colour_and_the_ignored_label_grey():
    colors = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    image = vis.colorize(np.array([[0, 1, 2], [255, 2, 1]]), colors)
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    expected = [[colors[0], colors[1], colors[2]], [vis.IGNORE_COLOR, colors[2], colors[1]]]
    assert image.tolist() == [[list(c) for c in row] for row in expected]


def _predicting(model, label):
    """``model`` with its classifier biased so that every pixel predicts ``label``: a column
    showing only ``label`` proves the checkpoint was loaded (a fresh model predicts otherwise)."""
    with torch.no_grad():
        model.sem_seg_head.predictor.bias.zero_()
        model.sem_seg_head.predictor.bias[label] = 1e4
    return model


@pytest.mark.slow
def test_figure_draws_a_plain_checkpoint_and_an_mkd_run_directory(shapes_root,  # noqa: F811
                                                                   tmp_path):
    """A plain segmentor from its config and checkpoint, and an MKD run directory (config.yaml
    and model_final.pth, as train_net.py leaves them) that predicts with its student: its
    teacher's weights file does not exist and is not read."""
    torch.manual_seed(0)
    teacher = _predicting(instantiate(LazyConfig.load(str(SHAPES_SEG / "teacher.py")).model), 3)
    torch.save({"model": teacher.state_dict()}, tmp_path / "teacher.pth")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(SHAPES_SEG / "mkd.py")), [
        "model.teacher_weights=null", "model.student_weights=null",
        "model.distiller.decoder.width=32"])
    mkd = instantiate(cfg.model)
    _predicting(mkd.student, 5)
    run = tmp_path / "mkd_run"
    run.mkdir()
    torch.save({"model": mkd.state_dict(), "iteration": 4}, run / "model_final.pth")
    cfg.model.teacher_weights = str(tmp_path / "missing" / "teacher.pth")
    LazyConfig.save(cfg, str(run / "config.yaml"))

    output = tmp_path / "figure" / "predictions.png"
    columns = vis.main(["--images", "2", "--output", str(output),
                        "--model", "teacher", str(SHAPES_SEG / "teacher.py"),
                        str(tmp_path / "teacher.pth"), "--model", "student + MKD", str(run)])

    assert list(columns) == ["ground truth", "teacher", "student + MKD"]
    records = DatasetCatalog.get(VAL)[:2]
    for index, record in enumerate(records):
        labels = np.asarray(Image.open(record["sem_seg_file_name"]))
        assert np.array_equal(columns["ground truth"][index], labels)
        size = (record["height"], record["width"])
        assert columns["teacher"][index].shape == columns["student + MKD"][index].shape == size
        assert (columns["teacher"][index] == 3).all()
        assert (columns["student + MKD"][index] == 5).all()
    # Two rows of four panels (the image, the ground truth, two models) at 2.2 inches, 100 dpi.
    assert Image.open(output).size == (880, 520)


def test_a_model_must_be_a_finished_run_or_a_config_and_a_checkpoint(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not a finished run of tools/train_net.py"):
        vis.main(["--model", "student", str(tmp_path)])
    with pytest.raises(SystemExit):
        vis.main(["--model", "student"])
    assert "give LABEL RUN_DIR or LABEL CONFIG CHECKPOINT" in capsys.readouterr().err


def test_the_tool_is_the_figures_command_line(capsys):
    """tools/visualize_sem_seg.py only runs ``mkd_bench.figures.sem_seg``."""
    with pytest.raises(SystemExit) as exited:
        run_tool("visualize_sem_seg", ["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert "Semantic segmentation models side by side" in printed and "--model" in printed
