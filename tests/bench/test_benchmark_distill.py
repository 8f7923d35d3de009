import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.engine import hooks
from detectron2.utils.events import EventStorage
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from mkd import MKD, FeatureLoss, GlobalLoss, MKDDecoder, MKDDistiller, PatchMasker
from mkd_bench import distill_benchmark as bench
from mkd_bench import plan, pretrain, runs, tables, tuning
from mkd_bench.datasets import GENERATORS
from mkd_bench.pairs import (
    ABLATIONS,
    CALIBRATION_FILE,
    LOSS_WEIGHTS,
    METHODS,
    PAIRS,
    TASKS,
    TUNING_FILE,
)
from tests import helpers


def test_config_hash_is_stable_across_processes_and_follows_the_config():
    """Cached teachers are found by this hash in later runs: it must not depend on the process
    (a function's repr holds its address) but must change with any override."""
    config = runs.config_path("retinanet_R50_scratch")
    here = runs.config_hash(config, ["train.max_iter=7"])
    script = ("from mkd_bench import runs; "
              "print(runs.config_hash(runs.config_path('retinanet_R50_scratch'), "
              "['train.max_iter=7']))")
    other = subprocess.run([sys.executable, "-c", script],
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    assert other == here
    assert runs.config_hash(config, ["train.max_iter=8"]) != here


def test_config_hash_follows_the_generator_version_of_the_dataset_it_reads(monkeypatch):
    """A run cached on an older version of its dataset is stale; other datasets' versions do
    not matter to it."""
    shapes = runs.config_path("student", "shapes")
    digits = runs.config_path("retinanet_R18_scratch")
    before = runs.config_hash(shapes, []), runs.config_hash(digits, [])
    monkeypatch.setattr(GENERATORS["shapes"], "GENERATOR_VERSION", -1)
    assert runs.config_hash(shapes, []) != before[0]
    assert runs.config_hash(digits, []) == before[1]


def test_se_of_difference_and_gap_closed_on_made_up_numbers():
    # variances 4 and 1 over 3 seeds each: sqrt(4/3 + 1/3)
    assert tables.se_of_difference([30, 32, 34], [20, 21, 22]) == pytest.approx(math.sqrt(5 / 3))
    assert tables.se_of_difference([30, 32], [20, 21, 22, 23]) == pytest.approx(
        math.sqrt(2 / 2 + (5 / 3) / 4))
    assert math.isnan(tables.se_of_difference([30], [20, 21]))  # one seed has no spread
    assert tables.gap_closed(27.0, 20.0, 40.0) == pytest.approx(0.35)
    assert tables.gap_closed(18.0, 20.0, 40.0) == pytest.approx(-0.1)


def test_verdicts_say_met_or_by_how_much_missed():
    table = [{"method": "none", "AP": 20.0},
             {"method": "fgd", "AP": 24.0},
             {"method": "mgd", "AP": 25.5},
             {"method": "fgd_recipe", "AP": 26.0},
             {"method": "mkd", "AP": 25.0, "AP - none": 5.0, "SE of diff": 3.0,
              "gap closed": 0.25},
             {"method": "teacher", "AP": 40.0}]
    lines = tables.verdicts(table, "AP")
    assert lines[0] == "MKD - none >= 2 SE: missed (+5.00 AP, 2 SE = 6.00, short by 1.00 AP)"
    assert lines[1] == "MKD >= best of fgd/mgd: missed (MKD 25.00, mgd 25.50, -0.50 AP)"
    assert lines[2] == ("MKD >= fgd_recipe (a published recipe, its own row): missed "
                        "(MKD 25.00, fgd_recipe 26.00, -1.00 AP)")
    assert lines[3] == "MKD closes >= 40% of the gap: missed (25.0%, short by 15.0 points)"
    table[4].update({"AP": 27.0, "AP - none": 7.0, "gap closed": 0.45})
    assert [line.split(":")[1].split()[0] for line in tables.verdicts(table, "AP")] == ["met"] * 4


def test_choose_factors_takes_the_best_mean_and_prefers_x1_on_ties():
    chosen = tuning.choose_factors({"mimic": {0.3: 10.0, 1.0: 11.0, 3.0: 12.0},
                                   "mkd": {0.3: 13.0, 1.0: 13.0, 3.0: 13.0}})
    assert chosen == {"mimic": 3.0, "mkd": 1.0}


def test_unfinished_runs_go_seed_by_seed_across_rows(tmp_path):
    planned = {name: [runs.Run(f"{name} seed {seed}", "cfg.py", str(tmp_path / name / str(seed)),
                               [], "bbox") for seed in (0, 1, 2)] for name in ("none", "mkd")}
    _fake_run(planned["none"][0], 30.0)
    order = [run.name for run in plan.unfinished_seed_by_seed(planned)]
    assert order == ["mkd seed 0", "none seed 1", "mkd seed 1", "none seed 2", "mkd seed 2"]


def _fake_run(run, score, iteration=5, time=0.5):
    """A finished run as train_net.py leaves it: model_final.pth and metrics.json, every metric
    of its task at ``score``."""
    os.makedirs(run.output_dir, exist_ok=True)
    open(os.path.join(run.output_dir, "model_final.pth"), "w").close()
    metrics = [{"iteration": iteration - 1, "total_loss": 1.0, "time": time},
               {"iteration": iteration,
                **{f"{run.task}/{k}": score for k in runs.TASK_METRICS[run.task]}}]
    with open(os.path.join(run.output_dir, "metrics.json"), "w") as f:
        f.write("\n".join(json.dumps(m) for m in metrics))


def _launch_made_up_runs(monkeypatch):
    """Training replaced by made-up finished runs (40 AP each); returns the runs launched."""
    launched = []

    def launch(todo, **kwargs):
        for run in todo:
            launched.append(run)
            _fake_run(run, 40.0)

    monkeypatch.setattr(runs, "launch", launch)
    return launched


def _weight(run, key):
    return OmegaConf.select(runs.load_config(run.config_file, run.overrides), key)


def test_tuning_chooses_on_tuning_seeds_only_and_the_table_uses_its_factors(tmp_path,
                                                                             monkeypatch):
    """--tune then the table, on made-up finished runs (the cache: nothing trains)."""
    common = ["--output-dir", str(tmp_path), "--teacher-cache", str(tmp_path / "teachers"),
              "--methods", "none", "mimic", "mkd", "--seeds", "0", "1", "2"]
    args = bench.parse_args(common)
    bottom_up = str(tmp_path / "pretrained" / "model_final.pth")  # made up: nothing loads it
    monkeypatch.setattr(plan, "pretrained_bottom_up", lambda args: bottom_up)
    teacher = runs.teacher_run(args.teacher_cache, plan.start_from(bottom_up, distilled=False),
                               config_file=runs.config_path("teacher", "shapes"))
    _fake_run(teacher, 40.0)
    grid = plan.student_runs(args, plan.tuning_rows(args), teacher, [], [], bottom_up)
    assert sorted(grid) == [f"{m} x{f:g}" for m in ("mimic", "mkd") for f in (0.3, 1, 3)]
    # Made-up AP: mimic is best at x3; MKD at x0.3 by its mean, though x1 has the best seed.
    made_up = {"mimic x0.3": [20, 20], "mimic x1": [21, 21], "mimic x3": [22, 23],
               "mkd x0.3": [30, 30], "mkd x1": [50, 5], "mkd x3": [10, 10]}
    for name, seed_runs in grid.items():
        assert [o for r in seed_runs for o in r.overrides if o.startswith("train.seed=")] == [
            "train.seed=100", "train.seed=101"]
        for run, ap in zip(seed_runs, made_up[name]):
            _fake_run(run, ap)

    bench.main(common + ["--tune"])
    tuned = json.loads((tmp_path / TUNING_FILE).read_text())
    assert tuned["factors"] == {"mimic": 3.0, "mkd": 0.3}
    assert tuned["tuning_seeds"] == [100, 101]

    factors = tuning.load_factors(args, teacher, [])
    table = plan.student_runs(args, plan.table_rows(args, factors), teacher, [], [], bottom_up)
    base = plan.student_runs(args, plan.table_rows(args, {}), teacher, [], [], bottom_up)
    assert _weight(table["mimic"][0], "model.distiller.weight") == pytest.approx(
        3 * _weight(base["mimic"][0], "model.distiller.weight"))
    for key in LOSS_WEIGHTS["mkd"]:
        assert _weight(table["mkd"][0], key) == pytest.approx(0.3 * _weight(base["mkd"][0], key))
    for name, seed_runs in table.items():
        for seed, run in enumerate(seed_runs):
            _fake_run(run, {"none": 20.0, "mimic": 22.0, "mkd": 30.0}[name] + seed)
    rows = {r["method"]: r for r in bench.main(common)}
    assert (rows["mimic"]["weights"], rows["mkd"]["weights"]) == ("x3", "x0.3")
    assert rows["mkd"]["AP - none"] == pytest.approx(10.0)
    assert rows["mkd"]["gap closed"] == pytest.approx(10.0 / (40.0 - 21.0))
    assert "MKD closes >= 40% of the gap: met (52.6%)" in (tmp_path / "results.md").read_text()

    with pytest.raises(SystemExit, match=r"seeds \[100\] chose the weights"):
        bench.main(common[:-3] + ["100", "1"])

    # An edited student recipe (here: the teacher's, 600 iterations) invalidates the tuning.
    config_file = plan.config_file
    monkeypatch.setattr(plan, "config_file", lambda args, method, pair="": runs.config_path(
        "teacher", "shapes") if method == "none" else config_file(args, method, pair))
    with pytest.raises(SystemExit, match=r"was tuned for .* rerun --tune"):
        tuning.load_factors(args, teacher, [])
    # So does another student schedule.
    monkeypatch.setattr(plan, "config_file", config_file)
    with pytest.raises(SystemExit, match=r"was tuned for .* rerun --tune"):
        tuning.load_factors(args, teacher, runs.schedule(150))


def test_a_later_tune_extends_the_grid_and_keeps_other_methods(tmp_path, monkeypatch):
    """--grid 9 after the default grid adds x9 to it and chooses over all four factors; a tune
    of MKD alone keeps mimic's grid; the table refuses a method that was never tuned."""
    common = ["--output-dir", str(tmp_path), "--teacher-cache", str(tmp_path / "teachers"),
              "--seeds", "0"]
    bottom_up = str(tmp_path / "pretrained" / "model_final.pth")
    monkeypatch.setattr(plan, "pretrained_bottom_up", lambda args: bottom_up)
    args = bench.parse_args(common)
    teacher = runs.teacher_run(args.teacher_cache, plan.start_from(bottom_up, distilled=False),
                               config_file=runs.config_path("teacher", "shapes"))
    _fake_run(teacher, 40.0)

    def tune(methods, grid, made_up, extra=()):
        argv = common + ["--tune", "--methods", *methods, "--grid", *grid, *extra]
        args = bench.parse_args(argv)
        planned = plan.student_runs(args, plan.tuning_rows(args), teacher, [], [], bottom_up)
        for name, seed_runs in planned.items():
            for run in seed_runs:
                _fake_run(run, made_up[name])
        bench.main(argv)
        return json.loads((tmp_path / TUNING_FILE).read_text())

    tuned = tune(["mimic"], ["0.3", "1", "3"], {"mimic x0.3": 20, "mimic x1": 21, "mimic x3": 22})
    assert tuned["factors"] == {"mimic": 3.0}
    tuned = tune(["mimic"], ["9"], {"mimic x9": 23})
    assert tuned["factors"] == {"mimic": 9.0}
    assert tuned["mean_AP"]["mimic"] == {"0.3": 20, "1.0": 21, "3.0": 22, "9.0": 23}
    tuned = tune(["mkd"], ["1", "3"], {"mkd x1": 30, "mkd x3": 25})
    assert tuned["factors"] == {"mimic": 9.0, "mkd": 1.0}

    table = common + ["--methods", "none", "mimic", "mkd", "mgd"]
    with pytest.raises(SystemExit, match=r"no tuned weights for \['mgd'\]: run --tune "
                                         r"--methods mgd"):
        tuning.load_factors(bench.parse_args(table), teacher, [])
    assert tuning.load_factors(bench.parse_args(table[:-1]), teacher, []) == {
        "mimic": 9.0, "mkd": 1.0}
    # MKD's ablations need MKD's tuned weights (and their controls' methods'), not all.
    assert tuning.load_factors(bench.parse_args(common + ["--ablations", "tokens-8"]), teacher,
                              []) == {"mimic": 9.0, "mkd": 1.0}
    with pytest.raises(SystemExit, match=r"no tuned weights for \['mgd'\]"):
        tuning.load_factors(bench.parse_args(common + ["--ablations", "mgd-grad-x1"]), teacher, [])
    # on the tuning seeds, where experiments belong (the table refuses them: above).
    assert tuning.load_factors(bench.parse_args(common[:-1] + ["100", "--ablations", "tokens-8"]),
                              teacher, []) == {"mimic": 9.0, "mkd": 1.0}
    # Other tuning seeds start a new grid.
    tuned = tune(["mkd"], ["3"], {"mkd x3": 25}, ["--tune-seeds", "100"])
    assert tuned["factors"] == {"mkd": 3.0}


class _ScriptRun(runs.Run):
    """A run whose command is a Python one-liner instead of train_net.py."""
    script: str = ""

    @property
    def command(self):
        return [sys.executable, "-c", self.script]


def test_a_run_stopped_by_a_non_finite_loss_is_a_diverged_result_other_failures_raise(tmp_path):
    nan = _ScriptRun("x3 seed 100", "", str(tmp_path / "nan"))
    nan.script = "raise FloatingPointError('Loss became infinite or NaN at iteration=64!')"
    runs.launch([nan])
    assert nan.diverged and nan.finished and nan.final_score() == 0.0
    assert "iteration=64" in (tmp_path / "nan" / runs.DIVERGED).read_text()

    broken = _ScriptRun("broken", "", str(tmp_path / "broken"))
    broken.script = "raise KeyError('model.distiller.wieght')"
    with pytest.raises(RuntimeError, match="broken failed"):
        runs.launch([broken])
    assert not broken.diverged and not broken.finished


def test_tuning_never_chooses_a_factor_that_diverged_and_the_table_counts_it(tmp_path,
                                                                            monkeypatch):
    common = ["--output-dir", str(tmp_path), "--teacher-cache", str(tmp_path / "teachers"),
              "--methods", "none", "mimic", "--seeds", "0", "1", "--tune-seeds", "100"]
    args = bench.parse_args(common)
    bottom_up = str(tmp_path / "pretrained" / "model_final.pth")
    monkeypatch.setattr(plan, "pretrained_bottom_up", lambda args: bottom_up)
    teacher = runs.teacher_run(args.teacher_cache, plan.start_from(bottom_up, distilled=False),
                               config_file=runs.config_path("teacher", "shapes"))
    _fake_run(teacher, 40.0)
    grid = plan.student_runs(args, plan.tuning_rows(args), teacher, [], [], bottom_up)
    for name, ap in {"mimic x0.3": 20.0, "mimic x1": 25.0}.items():
        _fake_run(grid[name][0], ap)
    diverged = grid["mimic x3"][0]
    os.makedirs(diverged.output_dir)
    (Path(diverged.output_dir) / runs.DIVERGED).write_text("FloatingPointError: ...")
    tuning = {r["method"]: r for r in bench.main(common + ["--tune"])}
    assert json.loads((tmp_path / TUNING_FILE).read_text())["factors"] == {"mimic": 1.0}
    assert (tuning["mimic x3"]["diverged"], tuning["mimic x3"]["AP"]) == (1, 0.0)

    table = plan.student_runs(args, plan.table_rows(args, {"mimic": 1.0}), teacher, [], [],
                               bottom_up)
    for run, ap in zip(table["none"], (20.0, 22.0)):
        _fake_run(run, ap)
    _fake_run(table["mimic"][0], 30.0)
    os.makedirs(table["mimic"][1].output_dir)
    (Path(table["mimic"][1].output_dir) / runs.DIVERGED).write_text("FloatingPointError: ...")
    rows = {r["method"]: r for r in bench.main(common)}
    assert (rows["mimic"]["seeds"], rows["mimic"]["diverged"]) == (2, 1)
    assert rows["mimic"]["AP"] == pytest.approx(15.0)  # the diverged seed counts as 0 AP
    assert rows["mimic"]["AP50"] == pytest.approx(30.0)  # the others: finished seeds only


def test_shapes_runs_start_from_the_given_pretrained_checkpoint_digits_runs_pretrain_nothing(
        tmp_path):
    """The none row loads it as train.init_checkpoint, a distilled row as its student's weights
    (the same keys the configs use); its path is in the run's config hash."""
    args = bench.parse_args(["--methods", "none", "mkd", "--seeds", "0",
                             "--output-dir", str(tmp_path)])
    teacher = runs.Run("teacher", "unused", str(tmp_path / "teacher"))

    def runs_from(bottom_up):
        return plan.student_runs(args, plan.table_rows(args, {}), teacher, [], [], bottom_up)

    first, other = runs_from("/a/model_final.pth"), runs_from("/b/model_final.pth")
    assert _weight(first["none"][0], "train.init_checkpoint") == "/a/model_final.pth"
    assert _weight(first["mkd"][0], "model.student_weights") == "/a/model_final.pth"
    assert _weight(first["mkd"][0], "train.init_checkpoint") == ""
    for name in ("none", "mkd"):
        assert first[name][0].output_dir != other[name][0].output_dir
    assert plan.pretrained_bottom_up(bench.parse_args(["--pair", "digits"])) == ""


def test_task_picks_its_default_pair_and_a_pair_implies_its_task():
    default = bench.parse_args([])
    assert (default.task, default.pair, default.pretrained) == ("detection", "shapes", True)
    assert default.methods == METHODS
    assert bench.parse_args(["--pair", "digits"]).task == "detection"
    seg = bench.parse_args(["--task", "sem_seg"])
    assert (seg.pair, seg.pretrained) == ("shapes_seg", True)
    assert seg.methods == ["none", "mimic", "mgd", "mkd"]  # FGD needs boxes
    assert seg.output_dir.endswith(os.path.join("benchmark_distill", "shapes_seg"))
    assert bench.parse_args(["--pair", "shapes_seg"]).task == "sem_seg"


def test_the_tool_is_the_benchmarks_command_line(capsys):
    """tools/benchmark_distill.py only runs the harness: its options and help are the harness's."""
    with pytest.raises(SystemExit) as exited:
        helpers.run_tool("benchmark_distill", ["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert "python tools/benchmark_distill.py --tune" in printed
    assert all(option in printed for option in ("--ablations", "--probe N", "--factors-from"))


def test_a_pair_of_another_task_or_a_method_it_lacks_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--task", "sem_seg", "--pair", "digits"])
    assert ("the digits pair is a detection pair, not sem_seg: drop --task, or choose a sem_seg "
            "pair (shapes_seg)") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--task", "sem_seg", "--methods", "none", "fgd"])
    assert ("the shapes_seg pair has no config for ['fgd']: choose among ['none', 'mimic', "
            "'mgd', 'mkd']") in capsys.readouterr().err


@pytest.mark.parametrize("argv, pretrained, folder", [
    (["--task", "sem_seg"], True, "shapes_seg"),
    (["--task", "sem_seg", "--pretrained"], True, "shapes_seg"),
    (["--task", "sem_seg", "--no-pretrained"], False, "shapes_seg_scratch"),
    (["--no-pretrained"], False, "shapes_scratch"),
    (["--pretrained"], True, "shapes"),
])
def test_pretrained_departing_from_the_pair_gets_its_own_output_dir(argv, pretrained, folder):
    """Both variants cache by config hash anyway; their tables and tuned weights must not
    overwrite each other's."""
    args = bench.parse_args(argv)
    assert args.pretrained is pretrained
    assert os.path.basename(args.output_dir) == folder


def _bottom_up_shapes(config):
    model = LazyConfig.load(config).model
    return {k: v.shape for k, v in instantiate(model.backbone.bottom_up).state_dict().items()}


def test_segmentation_pair_pretrains_the_detector_that_has_its_bottom_up(tmp_path, monkeypatch):
    """tools/pretrain_backbone.py classifies crops of boxes, which a segmentation split lacks:
    the shapes_seg pair pretrains the shapes detector, whose bottom-up has the segmentation
    teacher's and student's state-dict keys and shapes (so the checkpoint fills them) and reads
    the same train images. Its runs start from it as the detection pair's do."""
    pair = PAIRS["shapes_seg"]
    monkeypatch.setattr(pretrain, "pretrain", lambda config, settings, root, overrides=(): config)
    args = bench.parse_args(["--task", "sem_seg", "--pretrained", "--smoke", "--seeds", "0",
                             "--methods", "none", "mkd", "--output-dir", str(tmp_path)])
    detector = plan.pretrained_bottom_up(args)
    assert detector == runs.config_path("student", "shapes")
    assert plan.pretrained_bottom_up(bench.parse_args(["--task", "sem_seg",
                                                        "--no-pretrained"])) == ""
    pretrained = _bottom_up_shapes(detector)
    for name in (pair.teacher, pair.methods["none"]):
        assert _bottom_up_shapes(runs.config_path(name, pair.folder)) == pretrained, name
    images = [MetadataCatalog.get(n).image_root for n in ("mkd_shapes_train",
                                                           "mkd_shapes_sem_seg_train")]
    assert images[0] == images[1]

    teacher = runs.Run("teacher", "unused", str(tmp_path / "teacher"), task="sem_seg")
    planned = plan.student_runs(args, plan.table_rows(args, {}), teacher, [], [], "/a/b.pth")
    assert _weight(planned["none"][0], "train.init_checkpoint") == "/a/b.pth"
    assert _weight(planned["mkd"][0], "model.student_weights") == "/a/b.pth"
    assert {r.task for rs in planned.values() for r in rs} == {"sem_seg"}


def test_runs_read_the_metrics_of_their_task(tmp_path):
    """A segmentation run reads SemSegEvaluator's keys; read as a detection run it has no
    evaluation, so it is not finished (nor a valid cache)."""
    run = runs.Run("seg", "unused", str(tmp_path), task="sem_seg")
    _fake_run(run, 42.0, iteration=10)
    assert run.evaluations() == [{"iteration": 10, "mIoU": 42.0, "fwIoU": 42.0, "mACC": 42.0,
                                  "pACC": 42.0}]
    assert run.finished
    as_boxes = runs.Run("seg", "unused", str(tmp_path))
    assert as_boxes.evaluations() == [] and not as_boxes.finished


def test_a_run_stopped_during_its_final_evaluation_is_not_finished(tmp_path):
    """Its final weights are saved, but its last score is a periodic evaluation's (iteration
    150 of 300): counted finished, the table would report that score."""
    run = runs.Run("none", "unused", str(tmp_path))
    _fake_run(run, 20.0, iteration=300)
    metrics = (tmp_path / "metrics.json").read_text().splitlines()
    periodic = {"iteration": 149, **{f"bbox/{k}": 20.0 for k in runs.TASK_METRICS["bbox"]}}
    (tmp_path / "metrics.json").write_text("\n".join([json.dumps(periodic), metrics[0]]))
    assert run.evaluations()[-1]["iteration"] == 150 and not run.finished
    (tmp_path / "metrics.json").write_text("\n".join([json.dumps(periodic), *metrics]))
    assert run.finished and run.final_score() == 20.0


def test_segmentation_table_reports_miou_against_none_and_the_teacher(tmp_path):
    """The table's statistics and verdicts on made-up finished segmentation runs, in mIoU."""
    args = bench.parse_args(["--task", "sem_seg", "--methods", "none", "mgd", "mkd",
                             "--seeds", "0", "1", "2", "--output-dir", str(tmp_path)])
    teacher = runs.Run("teacher", "unused", str(tmp_path / "teacher"), task="sem_seg")
    _fake_run(teacher, 60.0)
    rows = plan.table_rows(args, {})
    planned = plan.student_runs(args, rows, teacher, [], [])
    for name, seed_runs in planned.items():
        for seed, run in enumerate(seed_runs):
            _fake_run(run, {"none": 30.0, "mgd": 33.0, "mkd": 40.0}[name] + seed,
                      time={"none": 1.0, "mgd": 1.0, "mkd": 1.5}[name])
    table = tables.summarize(planned, teacher, rows, TASKS["sem_seg"].metrics)
    by_method = {row["method"]: row for row in table}
    mkd = by_method["mkd"]
    assert mkd["mIoU"] == pytest.approx(41.0) and mkd["mIoU std"] == pytest.approx(1.0)
    assert mkd["mIoU - none"] == pytest.approx(10.0)
    assert mkd["SE of diff"] == pytest.approx(math.sqrt(2 / 3))
    assert mkd["gap closed"] == pytest.approx(10.0 / 29.0)
    assert mkd["time/iter vs none"] == pytest.approx(1.5)
    assert mkd["pACC"] == pytest.approx(41.0)
    assert by_method["teacher"]["mIoU"] == 60.0
    header = runs.format_table(table, tables.columns(TASKS["sem_seg"])).splitlines()[0]
    assert header == ("| method | weights | seeds | diverged | mIoU | mIoU std | mIoU - none | "
                      "SE of diff | fwIoU | mACC | pACC | gap closed | time/iter vs none |")
    assert tables.verdicts(table, "mIoU") == [
        "MKD - none >= 2 SE: met (+10.00 mIoU, 2 SE = 1.63)",
        "MKD >= best of mgd: met (MKD 41.00, mgd 34.00, +7.00 mIoU)",
        "MKD closes >= 40% of the gap: missed (34.5%, short by 5.5 points)"]


def test_table_without_tuning_uses_calibrated_weights_and_warns(tmp_path, capsys):
    args = bench.parse_args(["--output-dir", str(tmp_path)])
    assert tuning.load_factors(args, runs.Run("teacher", "unused", str(tmp_path / "t")), []) == {}
    assert "WARNING" in capsys.readouterr().out


def test_ablations_plan_one_mkd_row_per_question_beside_none_and_the_table_mkd(tmp_path):
    """Every ablation is MKD with exactly its overrides added; none and MKD are the table's runs
    (same directories, so cached), at the table's tuned MKD weights."""
    teacher = runs.Run("teacher", "unused", str(tmp_path / "teacher"))

    def planned(argv, rows):
        args = bench.parse_args(argv + ["--seeds", "0", "1", "--output-dir", str(tmp_path)])
        return plan.student_runs(args, rows(args), teacher, runs.schedule(10), [])

    factors = {"mkd": 3.0}
    ablations = planned(["--ablations"], lambda a: plan.ablation_rows(a, factors))
    methods = planned(["--methods", "none", "mkd"], lambda a: plan.table_rows(a, factors))
    controls = {t: v[0] for t, v in ABLATIONS.items() if isinstance(v, tuple)}
    assert controls == {"mimic-x3": "mimic", "mimic-x3-masked": "mimic",
                        "mimic-x3-adamw": "mimic", "mgd-grad-x1": "mgd", "mimic-x9": "mimic"}
    assert list(ablations) == ["none", "mkd"] + [f"{controls.get(t, 'mkd')}[{t}]"
                                                 for t in ABLATIONS]
    assert set(ABLATIONS) == {
        "distiller-lr-x10", "init-from-teacher", "single-pass-frozen-bn", "no-global-loss",
        "hidden-positions-only", "mask-ratio-0.3", "mask-ratio-0.75", "decoder-depth-1",
        "decoder-depth-4", "norm-batch", "norm-clean", "mask-ratio-0", "tokens-8", "tokens-16",
        "decoder-depth-0", "residual-adapter", "distiller-adamw", "mkd-grad-x1", "mkd-grad-x3",
        "mkd-grad-x9", "feature-norm-layernorm", "levels-p3-p5", "student-gradient-x3",
        "student-gradient-x0.33", "sam-norm", "decoder-width-128", "levels-per-sequence",
        "mask-patch-16", *controls}
    for name in ("none", "mkd"):
        assert [r.output_dir for r in ablations[name]] == [r.output_dir for r in methods[name]]
    methods.update(planned(["--methods", "mimic", "mgd"], lambda a: plan.table_rows(a, factors)))
    for tag, value in ABLATIONS.items():
        method, extra = plan.ablation(tag)
        default_runs = methods[method]
        # An ablation that sets the method's loss weights sets them relative to its calibrated
        # ones: the table's factor still multiplies them (the last override wins).
        weights = tuple(f"{key}=" for key in LOSS_WEIGHTS.get(method, []))

        def without_weights(overrides):
            return sorted(o for o in overrides if not o.startswith(weights))

        for default, variant in zip(default_runs, ablations[f"{method}[{tag}]"]):
            assert without_weights(variant.overrides) == without_weights(default.overrides
                                                                          + extra)
            assert set(extra) <= set(variant.overrides)
            assert variant.output_dir != default.output_dir
            # A folder name Hydra's override grammar accepts in train.output_dir=...
            assert " " not in variant.output_dir and "[" not in variant.output_dir


def test_weight_ablations_scale_with_the_tables_factor(tmp_path):
    teacher = runs.Run("teacher", "unused", str(tmp_path / "teacher"))
    args = bench.parse_args(["--ablations", "mkd-grad-x3", "mgd-grad-x1", "--seeds", "0",
                             "--output-dir", str(tmp_path)])
    planned = plan.student_runs(args, plan.ablation_rows(args, {"mkd": 3.0, "mgd": 0.5}),
                                 teacher, runs.schedule(10), [])

    def last(run, key):
        return float([o for o in run.overrides if o.startswith(key + "=")][-1].split("=")[1])

    (mkd,) = planned["mkd[mkd-grad-x3]"]
    assert last(mkd, "model.distiller.feature_weight") == pytest.approx(14.8 * 3.0)
    assert last(mkd, "model.distiller.global_weight") == pytest.approx(14.8 * 3.0)
    (mgd,) = planned["mgd[mgd-grad-x1]"]
    assert last(mgd, "model.distiller.alpha") == pytest.approx(4.5e-3 * 0.5)


def _shapes_config(name):
    return LazyConfig.load(runs.config_path(name, "shapes"))


def test_fgd_recipe_is_fgd_with_the_published_weights_and_the_student_from_the_teacher():
    recipe, fgd = _shapes_config("fgd_recipe"), _shapes_config("fgd")
    published = dict(temperature=0.5, alpha_fg=1e-3, beta_bg=5e-4, gamma_attention=5e-4,
                     lambda_global=5e-6)
    assert {k: recipe.model.distiller[k] for k in published} == published
    assert recipe.model.init_student_from_teacher is True
    assert fgd.model.init_student_from_teacher is False
    assert fgd.model.distiller.temperature == 0.5
    scale = fgd.model.distiller.alpha_fg / 1e-3  # the calibrated row keeps the published balance
    for key in ("beta_bg", "gamma_attention", "lambda_global"):
        assert fgd.model.distiller[key] == pytest.approx(scale * published[key])


def test_every_distilled_shapes_config_is_one_machinery_on_the_student_schedule():
    """mimic, FGD, MGD and MKD differ only in their distiller (and masker): same teacher,
    student, data, optimizer and schedule as the undistilled student."""
    student = _shapes_config("student")
    assert student.train.init_checkpoint == _shapes_config("teacher").train.init_checkpoint
    reference = None
    for name in ("mkd", "mimic", "fgd", "fgd_recipe", "mgd"):
        cfg = _shapes_config(name)
        assert cfg.model.student == student.model
        assert cfg.model.teacher == _shapes_config("teacher").model
        for part in ("dataloader", "optimizer", "lr_multiplier"):
            assert OmegaConf.to_yaml(cfg[part]) == OmegaConf.to_yaml(student[part]), (name, part)
        train = OmegaConf.to_container(cfg.train)
        assert train.pop("output_dir") == f"./output/shapes/{name}"
        # The student's pretrained bottom-up, as its weights (init_checkpoint: MKD checkpoints).
        assert cfg.model.student_weights == student.train.init_checkpoint, name
        assert train.pop("init_checkpoint") == "", name
        del cfg.model.distiller, cfg.model.masker, cfg.model.init_student_from_teacher
        reference = reference or cfg.model
        assert cfg.model == reference, name
        assert train == {k: v for k, v in OmegaConf.to_container(student.train).items()
                         if k not in ("output_dir", "init_checkpoint")}, name


def _tiny_mkd(tmp_path, **kwargs):
    teacher = helpers.build("retinanet", 34, 32, seed=0)
    torch.save({"model": teacher.state_dict()}, tmp_path / "teacher.pth")
    distiller = MKDDistiller(decoder=MKDDecoder(width=32, depth=1, num_heads=4, patch_size=32),
                             feature_loss=FeatureLoss(), global_loss=GlobalLoss())
    return MKD(student=helpers.build("retinanet", 18, 32, seed=1), teacher=teacher,
               teacher_weights=str(tmp_path / "teacher.pth"), distiller=distiller,
               masker=PatchMasker(patch_size=32, mask_ratio=0.5), **kwargs).train()


def _tiny_single_pass_mkd(tmp_path, freeze):
    return _tiny_mkd(tmp_path, task_pass="masked", freeze_norm_statistics=freeze)


def _norm_statistics(module):
    return [t.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d)
            for t in (m.running_mean, m.running_var)]


def _stem_input_mean(model, run):
    """The per-channel mean of what the student's stem BN normalises during ``run()``."""
    seen = []
    handle = model.student.backbone.bottom_up.stem.conv1.norm.register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0].detach().mean(dim=(0, 2, 3))))
    with EventStorage():
        run()
    handle.remove()
    return seen[0]


def test_frozen_bn_single_pass_keeps_running_statistics_and_precise_bn_restores_clean_ones(
        tmp_path):
    """The masked pass trains with batch statistics but leaves the running ones alone (without
    the freeze it moves them); Detectron2's PreciseBN on the student then sets them from clean
    images, not from masked ones."""
    batch = helpers.batch(with_masks=False)
    moving = _tiny_single_pass_mkd(tmp_path, freeze=False)
    before = _norm_statistics(moving.student)
    with EventStorage():
        moving(batch)
    assert any(not torch.equal(a, b) for a, b in zip(before, _norm_statistics(moving.student)))

    model = _tiny_single_pass_mkd(tmp_path, freeze=True)
    before = _norm_statistics(model.student)
    masked_mean = _stem_input_mean(model, lambda: model(batch))
    assert all(torch.equal(a, b) for a, b in zip(before, _norm_statistics(model.student)))

    clean_mean = _stem_input_mean(model, lambda: model.student(batch))
    assert not torch.allclose(clean_mean, masked_mean, atol=1e-3)  # the masks change the input
    with EventStorage():
        hooks.PreciseBN(1, model.student, [batch] * 2, num_iter=2).update_stats()
    stem = model.student.backbone.bottom_up.stem.conv1.norm
    assert torch.allclose(stem.running_mean, clean_mean, atol=1e-4)
    assert all(torch.isfinite(t).all() for t in _norm_statistics(model.student))


def test_frozen_bn_is_refused_without_a_single_masked_pass(tmp_path):
    with pytest.raises(ValueError, match="freeze_norm_statistics is for task_pass='masked'"):
        _tiny_mkd(tmp_path, task_pass="clean", freeze_norm_statistics=True)


@pytest.fixture(scope="module")
def smoke_dir(module_tmp):
    """One cache for the smoke tests: the teacher and the runs they share train once."""
    return module_tmp("benchmark_smoke")


@pytest.mark.slow
def test_benchmark_smoke_has_every_row_with_finite_numbers_and_the_targets(smoke_dir):
    rows = bench.main(["--smoke", "--seeds", "0", "1", "--methods", "none", "fgd_recipe", "mkd",
                       "--output-dir", str(smoke_dir)])
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"none", "fgd_recipe", "mkd", "teacher"}
    for name, row in by_method.items():
        keys = ["AP", "AP50", "AP75"]
        if name != "teacher":
            assert row["seeds"] == 2
            keys += ["AP std", "time/iter vs none"]
        if name not in ("teacher", "none"):
            keys += ["AP - none", "SE of diff"]
        assert all(math.isfinite(row[k]) for k in keys), row
    assert by_method["none"]["time/iter vs none"] == 1.0
    text = (smoke_dir / "results.md").read_text()
    assert "| mkd |" in text and "MKD - none >= 2 SE:" in text
    assert (smoke_dir / "ap_vs_iteration.png").stat().st_size > 0


def _smoke_ablation(smoke_dir, name, config_text):
    """Runs one ablation beside none and MKD (finite AP each); returns its run's directory, the
    MKD run whose config.yaml contains ``config_text``."""
    rows = bench.main(["--smoke", "--seeds", "0", "--ablations", name,
                       "--output-dir", str(smoke_dir)])
    assert [r["method"] for r in rows] == ["none", "mkd", f"mkd[{name}]", "teacher"]
    assert all(math.isfinite(r["AP"]) for r in rows)
    (run_dir,) = [d for d in (smoke_dir / "mkd").iterdir()
                  if config_text in (d / "config.yaml").read_text()]
    return run_dir


@pytest.mark.slow
def test_smoke_ablation_of_the_frozen_bn_single_pass_evaluates_with_clean_statistics(
        smoke_dir):
    run_dir = _smoke_ablation(smoke_dir, "single-pass-frozen-bn", "freeze_norm_statistics: true")
    state = torch.load(run_dir / "model_final.pth", map_location="cpu")["model"]
    # Frozen through training, the running mean would still be BN's initial zeros.
    running_mean = state["student.backbone.bottom_up.stem.conv1.norm.running_mean"]
    assert torch.isfinite(running_mean).all() and running_mean.abs().sum() > 0


@pytest.mark.slow
def test_smoke_ablation_of_the_distiller_lr_trains_through_train_net(smoke_dir):
    run_dir = _smoke_ablation(smoke_dir, "distiller-lr-x10", "distiller_lr_factor")
    optimizer = LazyConfig.load(str(run_dir / "config.yaml")).optimizer
    assert optimizer.params.distiller_lr_factor == 10
    assert optimizer.params.base_lr == optimizer.lr  # the interpolation, resolved


@pytest.mark.slow
def test_probe_reports_initial_losses_and_both_calibration_factors(smoke_dir):
    rows = bench.main(["--smoke", "--probe", "3", "--methods", "none", "mimic", "mkd",
                       "--output-dir", str(smoke_dir)])
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"mimic", "mkd"}  # no distillation, nothing to calibrate
    for row in rows:
        assert row["task loss"] > 0 and row["distillation loss"] > 0, row
        assert row["ratio"] == pytest.approx(row["distillation loss"] / row["task loss"])
        matched = row["factor to MKD's ratio"] * row["ratio"]
        assert matched == pytest.approx(by_method["mkd"]["ratio"])
        # The gradient rule: the factor that scales the FPN gradient ratio to 1.
        assert row["FPN gradient ratio"] > 0
        assert row["factor to gradient ratio 1"] * row["FPN gradient ratio"] == pytest.approx(1.0)
    assert by_method["mkd"]["factor to MKD's ratio"] == pytest.approx(1.0)
    text = (smoke_dir / "probe.md").read_text()
    assert "| mimic |" in text and "factor to gradient ratio 1" in text
    calibration = json.loads((smoke_dir / CALIBRATION_FILE).read_text())
    assert calibration["gradient"] == pytest.approx(
        {m: r["factor to gradient ratio 1"] for m, r in by_method.items()})


@pytest.fixture(scope="module")
def seg_smoke_dir(module_tmp):
    """One cache for the segmentation smoke tests: their teacher trains once."""
    return module_tmp("benchmark_seg_smoke")


@pytest.mark.slow
def test_segmentation_smoke_table_reports_miou_and_draws_the_predictions(seg_smoke_dir):
    rows = bench.main(["--task", "sem_seg", "--smoke", "--seeds", "0", "1", "--methods", "none",
                       "mkd", "--output-dir", str(seg_smoke_dir)])
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"none", "mkd", "teacher"}
    for name, row in by_method.items():
        keys = ["mIoU", "fwIoU", "mACC", "pACC"]
        if name != "teacher":
            assert row["seeds"] == 2
            keys += ["mIoU std", "time/iter vs none"]
        assert all(math.isfinite(row[k]) for k in keys), row
        assert 0 <= row["mIoU"] <= 100
    text = (seg_smoke_dir / "results.md").read_text()
    assert "| mIoU | mIoU std | mIoU - none |" in text and "| mkd |" in text
    assert "MKD - none >= 2 SE:" in text and " mIoU, 2 SE = " in text
    assert (seg_smoke_dir / "miou_vs_iteration.png").stat().st_size > 0
    # Four val images; the image, the ground truth, teacher, student and student + MKD.
    figure = Image.open(seg_smoke_dir / "predictions.png")
    assert figure.size == (1100, 960)


@pytest.mark.slow
def test_segmentation_probe_splits_the_segmentation_loss_from_the_distillation(seg_smoke_dir):
    rows = bench.main(["--task", "sem_seg", "--smoke", "--probe", "2", "--methods", "none",
                       "mimic", "mkd", "--output-dir", str(seg_smoke_dir)])
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"mimic", "mkd"}
    # One student and teacher at initialisation, the same batches: the same task loss.
    assert by_method["mimic"]["task loss"] == pytest.approx(by_method["mkd"]["task loss"])
    for row in rows:
        assert row["task loss"] > 0 and row["distillation loss"] > 0, row
        assert row["ratio"] == pytest.approx(row["distillation loss"] / row["task loss"])
    assert by_method["mkd"]["factor to MKD's ratio"] == pytest.approx(1.0)
    assert "shapes_seg" in (seg_smoke_dir / "probe.md").read_text()


def test_gradient_calibration_centres_each_methods_grid_on_the_probes_factor(tmp_path):
    teacher = runs.Run("teacher", "unused", str(tmp_path / "teacher"))
    common = ["--methods", "none", "mimic", "mkd", "--output-dir", str(tmp_path)]
    args = bench.parse_args(common + ["--tune", "--calibration", "gradient"])
    with pytest.raises(SystemExit, match=r"needs .*calibration\.json: run this command with "
                                         r"--probe 4"):
        tuning.calibration_factors(args, teacher)
    path = tmp_path / CALIBRATION_FILE
    path.write_text(json.dumps({"teacher": "another", "loss": {}, "gradient": {}}))
    with pytest.raises(SystemExit, match="probed with the teacher another.*rerun --probe"):
        tuning.calibration_factors(args, teacher)
    path.write_text(json.dumps({"teacher": teacher.output_dir, "loss": {},
                                "gradient": {"mimic": 1.0}}))
    with pytest.raises(SystemExit, match=r"no gradient factor for \['mkd'\]"):
        tuning.calibration_factors(args, teacher)
    path.write_text(json.dumps({"teacher": teacher.output_dir, "loss": {},
                                "gradient": {"mimic": 1.0, "mkd": 5.0}}))
    base = tuning.calibration_factors(args, teacher)
    rows = {r.name: r.factor for r in plan.tuning_rows(args, base)}
    assert rows == pytest.approx({"mimic x0.3": 0.3, "mimic x1": 1.0, "mimic x3": 3.0,
                                  "mkd x0.3": 1.5, "mkd x1": 5.0, "mkd x3": 15.0})
    # Ties go to the grid's centre, the probe's factor, not to the configs' weights.
    assert tuning.choose_factors({"mkd": {1.5: 40.0, 5.0: 40.0}}, base) == {"mkd": 5.0}
    assert tuning.calibration_factors(bench.parse_args(common + ["--tune"]), teacher) == {}


def test_the_second_instance_pair_trains_every_run_on_its_own_data(tmp_path, monkeypatch):
    """--pair shapes_seed1: the shapes configs with the data of generator seed 1 in the
    teacher's, the students' and the pretraining's configs; other runs than the shapes pair's."""
    pretrained, launched = [], _launch_made_up_runs(monkeypatch)
    monkeypatch.setattr(pretrain, "pretrain",
                        lambda config, settings, root, overrides=(): pretrained.append(
                            (config, list(overrides))) or str(tmp_path / "bottom_up.pth"))
    common = ["--output-dir", str(tmp_path), "--teacher-cache", str(tmp_path / "teachers"),
              "--methods", "none", "mkd", "--seeds", "0"]
    data = ["dataloader.train.dataset.names=mkd_shapes_seed1_train",
            "dataloader.test.dataset.names=mkd_shapes_seed1_val"]
    bench.main(common + ["--pair", "shapes_seed1"])
    assert pretrained == [(runs.config_path("student", "shapes"), data)]
    teacher, *students = launched
    for run in launched:
        cfg = runs.load_config(run.config_file, run.overrides)
        assert cfg.dataloader.train.dataset.names == "mkd_shapes_seed1_train"
        assert cfg.dataloader.test.dataset.names == "mkd_shapes_seed1_val"
    args = bench.parse_args(common)
    shapes = plan.student_runs(args, plan.table_rows(args, {}), teacher, [], [])
    assert {r.output_dir for r in students}.isdisjoint(
        r.output_dir for seed_runs in shapes.values() for r in seed_runs)


def test_the_r34_teacher_pair_starts_its_teacher_from_the_teachers_own_pretrained_bottom_up(
        tmp_path, monkeypatch):
    """--pair shapes_r34: the bottom-up pretrained for the R34 teacher's config starts the
    teacher, the R18 student's starts every student; both are pretrained on the same data."""
    pretrained, launched = [], _launch_made_up_runs(monkeypatch)

    def pretrain_config(config, settings, root, overrides=()):
        pretrained.append(config)
        return str(tmp_path / f"{Path(config).parent.name}_{Path(config).stem}.pth")

    monkeypatch.setattr(pretrain, "pretrain", pretrain_config)
    bench.main(["--output-dir", str(tmp_path), "--teacher-cache", str(tmp_path / "teachers"),
                "--methods", "none", "mimic", "mkd", "--seeds", "0", "--pair", "shapes_r34"])
    assert sorted(pretrained) == sorted([runs.config_path("student", "shapes_r34"),
                                         runs.config_path("teacher", "shapes_r34")])
    teacher, *students = launched
    assert _weight(teacher, "train.init_checkpoint") == str(tmp_path / "shapes_r34_teacher.pth")
    assert _weight(teacher, "model.backbone.bottom_up.stages.depth") == 34
    student_bottom_up = str(tmp_path / "shapes_r34_student.pth")
    assert [_weight(r, "train.init_checkpoint" if r.name.startswith("none") else
                    "model.student_weights") for r in students] == [student_bottom_up] * 3
    for run in students[1:]:
        assert _weight(run, "model.teacher.backbone.bottom_up.stages.depth") == 34
        assert _weight(run, "model.teacher_weights") == f"{teacher.output_dir}/model_final.pth"


def test_the_r34_teacher_pairs_configs_are_the_shapes_configs_with_only_the_teacher_replaced():
    """Its rows compare with the shapes pair's: same student, data, schedule and distillers.
    Its teacher is the R18 teacher with a deeper bottom-up (the same FPN channels, so every
    distiller's adapter fits both), its own pretrained start and a longer schedule."""
    teacher = LazyConfig.load(runs.config_path("teacher", "shapes_r34"))
    r18 = _shapes_config("teacher")
    deeper = LazyConfig.load(runs.config_path("teacher", "shapes_r34")).model
    assert deeper.backbone.bottom_up.stages.depth == 34
    deeper.backbone.bottom_up.stages.depth = 18
    assert OmegaConf.to_yaml(deeper) == OmegaConf.to_yaml(r18.model)
    for part in ("dataloader", "optimizer", "lr_multiplier"):
        assert OmegaConf.to_yaml(teacher[part]) == OmegaConf.to_yaml(r18[part]), part
    assert teacher.train.init_checkpoint == "./output/pretrained/shapes_R34.pth"
    assert teacher.train.max_iter == 2 * r18.train.max_iter
    for name in PAIRS["shapes_r34"].methods.values():
        cfg = LazyConfig.load(runs.config_path(name, "shapes_r34"))
        reference = _shapes_config(name)
        assert cfg.train.pop("output_dir") == f"./output/shapes_r34/{name}"
        reference.train.pop("output_dir")
        if name != "student":
            assert cfg.model.teacher == teacher.model
            assert cfg.model.pop("teacher_weights") == "./output/shapes_r34/teacher/model_final.pth"
            del cfg.model.teacher, reference.model.teacher, reference.model.teacher_weights
        assert sorted(cfg) == sorted(reference), name
        for part in cfg:
            assert OmegaConf.to_yaml(cfg[part]) == OmegaConf.to_yaml(reference[part]), (name, part)


def test_factors_from_another_pair_apply_its_tuned_weights_unchanged(tmp_path, monkeypatch):
    """A second instance is judged with the weights chosen on the first: --factors-from takes
    the shapes pair's tuned_factors.json, checked against the options that tuned it; the table
    on shapes_seed1 then trains MKD at those weights, on its own data."""
    monkeypatch.setattr(plan, "pretrained_bottom_up",
                        lambda args, detector="": str(tmp_path / "bottom_up.pth"))
    launched = _launch_made_up_runs(monkeypatch)
    shapes = tmp_path / "shapes"
    common = ["--teacher-cache", str(tmp_path / "teachers"), "--methods", "none", "mkd"]
    bench.main(common + ["--output-dir", str(shapes), "--tune", "--grid", "3"])
    assert json.loads((shapes / TUNING_FILE).read_text())["factors"] == {"mkd": 3.0}

    launched.clear()
    second = common + ["--pair", "shapes_seed1", "--output-dir", str(tmp_path / "seed1"),
                       "--seeds", "0"]
    bench.main(second + ["--factors-from", str(shapes)])
    teacher, none, mkd = launched
    calibrated = OmegaConf.select(runs.load_config(mkd.config_file, []),
                                  "model.distiller.feature_weight")
    assert _weight(mkd, "model.distiller.feature_weight") == pytest.approx(3 * calibrated)
    for run in launched:
        assert _weight(run, "dataloader.train.dataset.names") == "mkd_shapes_seed1_train"

    with pytest.raises(SystemExit, match="was tuned for"):  # another schedule than tuned
        bench.main(second + ["--factors-from", str(shapes), "--student-iter", "7"])
    with pytest.raises(SystemExit, match="no tuned_factors.json"):
        bench.main(second + ["--factors-from", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit):
        bench.parse_args(second + ["--factors-from", str(shapes), "--tune"])
