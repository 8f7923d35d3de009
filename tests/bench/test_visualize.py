"""tools/visualize_mkd.py (``mkd_bench.figures.reconstructions``): the panels of the teacher's
features and the decoder's reconstructions before and after training."""
import math

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from mkd import PatchMasker
from mkd_bench.figures import reconstructions as visualize
from tests.helpers import REPO, run_tool

CONFIG = str(REPO / "configs/builtin/retinanet_R50_to_R18_mkd.py")
MIMIC = str(REPO / "configs/builtin/retinanet_R50_to_R18_mimic.py")
SMALL = ["model.distiller.decoder.width=32", "model.distiller.decoder.num_heads=4",
         "model.masker.seed=0"]


@pytest.fixture(scope="module")
def checkpoints(module_tmp, tiny_digits):
    """A random teacher, an initial MKD checkpoint, and one whose decoder differs from it."""
    out = module_tmp("visualize")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG),
                                     SMALL + ["model.teacher_weights=null"])
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    torch.save({"model": model.teacher.state_dict()}, out / "teacher.pth")
    DetectionCheckpointer(model, str(out)).save("initial")
    with torch.no_grad():
        for p in model.distiller.decoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    DetectionCheckpointer(model, str(out)).save("mkd")
    torch.save({"model": {k: v for k, v in model.state_dict().items() if k.startswith("student.")}},
               out / "student_only.pth")
    return {name: str(out / f"{name}.pth")
            for name in ("teacher", "initial", "mkd", "student_only")}


def test_main_writes_one_png_per_image(checkpoints, tmp_path, capsys):
    paths = visualize.main([
        "--config-file", CONFIG, "--checkpoint", checkpoints["mkd"], "--initial-checkpoint",
        checkpoints["initial"], "--teacher-weights", checkpoints["teacher"], "--images", "1",
        "--output-dir", str(tmp_path), *SMALL,
    ])
    assert len(paths) == 1 and paths[0].startswith(str(tmp_path)) and paths[0].endswith(".png")
    assert (tmp_path / paths[0]).stat().st_size > 50_000  # 5 rows x 5 panels, not an empty page
    assert f"Wrote {paths[0]}" in capsys.readouterr().out


def test_panels_have_level_sizes_a_hidden_input_and_differ_with_the_decoder(checkpoints):
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(CONFIG), SMALL + [f"model.teacher_weights={checkpoints['teacher']}"])
    before = visualize.build_model(cfg, checkpoints["initial"], seed=0)
    after = visualize.build_model(cfg, checkpoints["mkd"], seed=0)
    (batched_input,) = visualize.load_inputs(cfg, num_images=1)
    panels = visualize.compute_panels(before, after, batched_input)

    height, width = batched_input["image"].shape[-2:]
    assert panels.masked_input.shape == (height, width, 3)
    strides = after.student.backbone.output_shape()
    assert [lv.level for lv in panels.levels] == after.levels == ["p3", "p4", "p5", "p6", "p7"]
    for lv in panels.levels:
        size = tuple(math.ceil(math.ceil(n / 32) * 32 / strides[lv.level].stride)
                     for n in (height, width))
        for data in (lv.teacher, lv.before, lv.after, lv.error):
            assert data.shape == size and np.isfinite(data).all()
        assert not np.allclose(lv.before, lv.after), lv.level
        assert not math.isclose(lv.error_before, float(lv.error.mean())), lv.level

    # The mask of training step 0 for this image; hidden pixels are black, the rest is the RGB
    # image (the configs feed BGR).
    drawn = PatchMasker(patch_size=32, mask_ratio=0.5, seed=0)(
        [(height, width)], [batched_input["image_id"]], step=0)
    np.testing.assert_array_equal(panels.mask_grid, drawn.grid[0].numpy() == 0)
    assert panels.mask_grid.mean() == pytest.approx(0.5, abs=0.1)
    hidden = np.kron(panels.mask_grid, np.ones((32, 32), dtype=bool))[:height, :width]
    rgb = batched_input["image"].permute(1, 2, 0).numpy()[:, :, ::-1] / 255.0
    assert (panels.masked_input[hidden] == 0).all()
    np.testing.assert_allclose(panels.masked_input[~hidden], rgb[~hidden], rtol=0, atol=1e-6)

    same = visualize.compute_panels(after, after, batched_input)  # one mask for both models
    for lv in same.levels:
        np.testing.assert_array_equal(lv.before, lv.after)


def test_refuses_checkpoints_without_the_decoder(checkpoints):
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(CONFIG), SMALL + [f"model.teacher_weights={checkpoints['teacher']}"])
    with pytest.raises(RuntimeError, match=r"do not fit .* missing; e.g. .*'distiller\.decoder\."):
        visualize.build_model(cfg, checkpoints["student_only"], seed=0)


def test_refuses_a_distiller_without_decoder_and_a_teacher_without_weights(tmp_path):
    with pytest.raises(ValueError, match="MimicDistiller, not an MKDDistiller"):
        visualize.main(["--config-file", MIMIC, "--checkpoint", str(tmp_path / "x.pth")])
    with pytest.raises(ValueError, match="--teacher-weights"):
        visualize.main(["--config-file", CONFIG, "--checkpoint", str(tmp_path / "x.pth"),
                        "model.teacher_weights=null"])


def test_the_tool_is_the_figures_command_line(capsys):
    """tools/visualize_mkd.py only runs ``mkd_bench.figures.reconstructions``."""
    with pytest.raises(SystemExit) as exited:
        run_tool("visualize_mkd", ["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert "What MKD's decoder learned" in printed and "--initial-checkpoint" in printed
