import math

import pytest
from conftest import load_tool


@pytest.mark.slow
def test_demo_smoke_runs_every_stage_and_reports_finite_numbers(tmp_path, capsys):
    rows = load_tool("demo").main(["--smoke", "--output-dir", str(tmp_path)])
    assert [r["run"] for r in rows] == ["teacher R18", "student R18", "student R18 + MKD"]
    for row in rows:
        assert all(math.isfinite(row[k]) for k in ("AP", "AP50", "AP75")), row
        assert row["iterations"] == 5  # iterations trained, not Detectron2's step index
    printed = capsys.readouterr().out
    assert all(f"[demo {i}/6, " in printed for i in range(1, 7))
    assert (tmp_path / "ap_vs_iteration.png").stat().st_size > 0
    assert "student R18 + MKD" in (tmp_path / "results.md").read_text()
    # A second demo reuses the teacher: its config hash matches.
    load_tool("demo").main(["--smoke", "--output-dir", str(tmp_path)])
    assert "reusing the cached" in capsys.readouterr().out
