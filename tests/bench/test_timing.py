"""tools/time_iteration.py (``mkd_bench.timing``): every row and piece of the time-per-iteration
benchmark on tiny detectors, and the per-level logging it times apart."""
import json
import math

import pytest
import torch
from detectron2.utils.events import EventStorage

from mkd_bench import timing, timing_steps
from tests import helpers
from tests.helpers import REPO, make_mkd, run_tool

# An MKD LazyConfig of tiny detectors (tests/helpers.py): the benchmark runs it in subprocesses,
# which need a config file, and the model zoo's detectors are too slow for a smoke test.
TINY_CONFIG = """
from tests import helpers
from detectron2 import model_zoo
from detectron2.config import LazyConfig

model = LazyConfig.load({common!r}).model
model.teacher = helpers.model_config("retinanet", 34, 32)
model.student = helpers.model_config("mask_rcnn", 18, 32)
model.distiller.decoder.update(width=32, num_heads=4, depth=1)
optimizer = model_zoo.get_config("common/optim.py").SGD
"""


def test_smoke_benchmark_reports_every_row(tmp_path):
    """A RetinaNet teacher and a Mask R-CNN student: both detector families, one run (each run
    starts four interpreters: one per row, one for the timings)."""
    config = tmp_path / "tiny_mkd.py"
    config.write_text(TINY_CONFIG.format(common=str(REPO / "configs/common/mkd.py")))
    out = tmp_path / "bench.json"
    results = timing.main(["--config-file", str(config), "--smoke", "--device", "cpu",
                           "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == results
    rows = results["rows"]
    assert set(rows) == set(timing.ROWS)
    for row in rows.values():
        for key in ("ms", "peak_abs_mb"):
            assert math.isfinite(row[key]) and row[key] > 0, (row, key)
        # A tiny model may stay below the imports' own RSS peak: the increase can be zero.
        assert math.isfinite(row["peak_mb"]) and row["peak_mb"] >= 0, row
    parts = rows["mkd"]["breakdown"]
    assert set(timing.BREAKDOWN) <= set(parts)
    measured = ("student_task", "mask_draw", "backbone_masked", "backbone_clean", "teacher_forward",
                "decoder", "losses", "second_pass", "optimizer_step")
    for key in measured:
        assert math.isfinite(parts[key]) and parts[key] > 0, key
    # Differences of measurements: finite, but noise may push them below zero.
    assert math.isfinite(parts["masking"]) and math.isfinite(parts["rest"])
    ratios = results["ratios"]
    assert ratios["mkd_over_student"] > 0 and ratios["target_share"] > 0
    # The iteration that logs per level, timed beside the one that does not.
    logging_ms = rows["mkd"]["logging_ms"]
    assert math.isfinite(logging_ms) and logging_ms > 0
    assert ratios["logging_over_mkd"] == logging_ms / rows["mkd"]["ms"]
    # The share sums differences of measurements (masking): noise may bring it to zero or below.
    assert all(math.isfinite(v) for v in ratios.values())


def test_the_logging_step_logs_and_the_plain_mkd_step_does_not(tmp_path):
    """``mkd_logging`` times an iteration that puts the per-level values in the storage, (c)
    one that puts none (a benchmark's storage stays at iteration 0, which any period divides)."""
    model = make_mkd(tmp_path)
    model.distiller.log_period = 0  # as build_mkd leaves it
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    clock = timing_steps.Clock("cpu")
    plain = timing_steps.training_step(model, optimizer, helpers.batch(), clock)[0]
    logged = timing_steps.logging_step(model, optimizer, helpers.batch(), clock)
    for step, logs in ((plain, False), (logged, True)):
        with EventStorage(0) as storage:
            step()
        assert any(k.startswith("distill/") for k in storage.histories()) == logs
        assert model.distiller.log_period == 0


def test_the_decoder_and_loss_pieces_fill_the_gradients_of_their_inputs(tmp_path):
    """The pieces call the distiller's own steps (``reconstruct``, ``level_terms``), here with
    the hidden-positions feature loss, which needs the mask's hidden shares."""
    model = make_mkd(tmp_path, distiller=helpers.mkd_distiller(positions="hidden")).train()
    pieces, leaves = timing_steps.breakdown_pieces(model, helpers.batch())
    with EventStorage(0):
        for name in ("decoder", "losses"):
            pieces[name]()
    assert len(leaves) == 2 * len(model.levels)
    for leaf in leaves:  # the student's masked features, then the decoder's output
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        assert leaf.grad.abs().sum() > 0


def test_the_tool_is_the_benchmarks_command_line(capsys):
    """tools/time_iteration.py only runs ``mkd_bench.timing``: the options are its."""
    with pytest.raises(SystemExit) as exited:
        run_tool("time_iteration", ["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert "time per iteration and peak memory" in printed and "--smoke" in printed
