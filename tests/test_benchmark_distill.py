import math

import pytest
from conftest import load_tool


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
