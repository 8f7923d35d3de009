import math
import os

import pytest
from detectron2.config import LazyConfig
from detectron2.data import MetadataCatalog
from omegaconf import OmegaConf

import mkd_bench.datasets
from mkd_bench.pairs import SMOKE_ITER
from tests.helpers import REPO, run_tool


@pytest.fixture
def shapes_registration(monkeypatch):
    """The smoke demo points MKD_DATASETS and mkd_shapes_* at its few images: restore both."""
    monkeypatch.delenv("MKD_DATASETS", raising=False)
    previous = MetadataCatalog.get("mkd_shapes_train").dataset_root
    yield
    mkd_bench.datasets.register_builtin(previous, dataset="shapes")


@pytest.mark.slow
def test_demo_smoke_runs_every_stage_from_the_pretrained_bottom_up(tmp_path, capsys,
                                                                   shapes_registration):
    from mkd_bench import demo
    rows = demo.main(["--smoke", "--output-dir", str(tmp_path)])
    assert [r["run"] for r in rows] == ["teacher", "student", "student + MKD"]
    for row in rows:
        assert all(math.isfinite(row[k]) for k in ("AP", "AP50", "AP75")), row
        assert row["iterations"] == SMOKE_ITER  # iterations trained, not the step index
    printed = capsys.readouterr().out
    assert all(f"[demo {i}/7, " in printed for i in range(1, 8))
    assert (tmp_path / "ap_vs_iteration.png").stat().st_size > 0
    assert "student + MKD" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "datasets" / "mkd_shapes" / "annotations").is_dir()

    # Teacher and students start from the demo's pretraining (the link in the output folder).
    bottom_up = os.path.realpath(tmp_path / "pretrained_R18.pth")
    assert bottom_up.startswith(str(tmp_path / "pretrained")), bottom_up
    (teacher_dir,) = (tmp_path / "teachers").iterdir()
    for run, key in [(teacher_dir, "train.init_checkpoint"),
                     (tmp_path / "student", "train.init_checkpoint"),
                     (tmp_path / "student_mkd", "model.student_weights")]:
        cfg = LazyConfig.load(str(run / "config.yaml"))
        assert os.path.realpath(OmegaConf.select(cfg, key)) == bottom_up, (run, key)
    mkd_cfg = LazyConfig.load(str(tmp_path / "student_mkd" / "config.yaml"))
    assert mkd_cfg.train.seed == 0
    # MKD at the benchmark's tuned weights, the table's MKD row: the config's, times the factor.
    calibrated = LazyConfig.load(str(REPO / "configs" / "shapes" / "mkd.py")).model.distiller
    for key in ("feature_weight", "global_weight"):
        assert mkd_cfg.model.distiller[key] == pytest.approx(demo.MKD_FACTOR * calibrated[key])

    # A second demo reuses the pretraining and the teacher: their hashes match.
    trained = os.path.getmtime(bottom_up)
    demo.main(["--smoke", "--output-dir", str(tmp_path)])
    assert "reusing the cached" in capsys.readouterr().out
    assert os.path.getmtime(bottom_up) == trained


def test_the_tool_is_the_demos_command_line(capsys):
    """tools/shapes_demo.py (``make demo``) only runs the harness: the options are the demo's."""
    with pytest.raises(SystemExit) as exited:
        run_tool("shapes_demo", ["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert "make demo" in printed and "--pretrain-iter" in printed and "--smoke" in printed
