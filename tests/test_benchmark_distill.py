import math
import os
import subprocess
import sys

import pytest
from conftest import load_tool


def test_config_hash_is_stable_across_processes_and_follows_the_config():
    """Cached teachers are found by this hash in later runs: it must not depend on the process
    (a function's repr holds its address) but must change with any override."""
    runs = load_tool("runs")
    config = runs.config_path("retinanet_R50_scratch")
    here = runs.config_hash(config, ["train.max_iter=7"])
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import runs; "
              "print(runs.config_hash(runs.config_path('retinanet_R50_scratch'), "
              "['train.max_iter=7']))")
    other = subprocess.run([sys.executable, "-c", script, os.path.dirname(runs.__file__)],
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    assert other == here
    assert runs.config_hash(config, ["train.max_iter=8"]) != here


@pytest.mark.slow
def test_benchmark_smoke_has_every_row_with_finite_numbers(tmp_path):
    rows = load_tool("benchmark_distill").main(
        ["--smoke", "--seeds", "0", "1", "--output-dir", str(tmp_path)])
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"none", "mimic", "fgd", "mgd", "mkd", "teacher R50"}
    for name, row in by_method.items():
        keys = ["AP", "AP50", "AP75"]
        if name != "teacher R50":
            assert row["seeds"] == 2
            keys += ["AP std", "time/iter vs none"]
        assert all(math.isfinite(row[k]) for k in keys), row
    assert by_method["none"]["time/iter vs none"] == 1.0
    assert "| mkd |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "ap_vs_iteration.png").stat().st_size > 0


@pytest.mark.slow
def test_probe_reports_initial_losses_and_the_factor_to_mkds_ratio(tmp_path):
    rows = load_tool("benchmark_distill").main(
        ["--smoke", "--probe", "3", "--methods", "none", "mimic", "mkd",
         "--output-dir", str(tmp_path)])
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"mimic", "mkd"}  # no distillation, nothing to calibrate
    for row in rows:
        assert row["task loss"] > 0 and row["distillation loss"] > 0, row
        assert row["ratio"] == pytest.approx(row["distillation loss"] / row["task loss"])
        matched = row["factor to MKD's ratio"] * row["ratio"]
        assert matched == pytest.approx(by_method["mkd"]["ratio"])
    assert by_method["mkd"]["factor to MKD's ratio"] == pytest.approx(1.0)
    assert "| mimic |" in (tmp_path / "probe.md").read_text()


def test_ablations_plan_one_mkd_row_per_question_beside_none_and_the_defaults(tmp_path):
    """Every ablation is MKD with exactly its overrides added; none and MKD at the defaults are
    the same runs (same directories, so cached) as the benchmark's own rows."""
    bench = load_tool("benchmark_distill")
    runs = load_tool("runs")
    teacher = runs.Run("teacher", "unused", str(tmp_path / "teacher"))

    def plan(argv):
        args = bench.parse_args(argv + ["--seeds", "0", "1", "--output-dir", str(tmp_path)])
        return bench.student_runs(args, teacher, runs.schedule(10), [])

    ablations, methods = plan(["--ablations"]), plan(["--methods", "none", "mkd"])
    assert list(ablations) == ["none", "mkd"] + [f"mkd[{t}]" for t in bench.ABLATIONS]
    for name in ("none", "mkd"):
        assert [r.output_dir for r in ablations[name]] == [r.output_dir for r in methods[name]]
    for tag, extra in bench.ABLATIONS.items():
        for default, variant in zip(methods["mkd"], ablations[f"mkd[{tag}]"]):
            assert sorted(variant.overrides) == sorted(default.overrides + extra)
            assert variant.output_dir != default.output_dir
            # A folder name Hydra's override grammar accepts in train.output_dir=...
            assert " " not in variant.output_dir and "[" not in variant.output_dir
