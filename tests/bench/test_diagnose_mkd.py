"""tools/diagnose_mkd.py (``mkd_bench.diagnose``): its measures on constructed features, then the
whole tool on tiny MKD, mimic and undistilled runs trained by tools/train_net.py on the built-in
digits."""
import contextlib
import itertools
import math

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from mkd.engine import train as train_net
from mkd.modeling.meta_arch import image_key
from mkd_bench.diagnose import cli, directions, errors, records, weighting
from tests.helpers import REPO, run_tool, train_net_setup

BUILTIN = REPO / "configs" / "builtin"
LEVELS = ["p3", "p4", "p5", "p6", "p7"]
# Two logged iterations of two 64-px images; no evaluation (the tool needs no AP). At 64 px, P6
# and P7 are one position each, which per-channel standardisation empties: the tool must say so.
RESIZE = "augmentations=[{_target_:detectron2.data.transforms.Resize,shape:[64,64]}]"
TINY = ["train.max_iter=2", "dataloader.train.total_batch_size=2", "train.log_period=1",
        "dataloader.evaluator=null", f"dataloader.train.mapper.{RESIZE}",
        f"dataloader.test.mapper.{RESIZE}"]
SIGNAL = 3  # P3-P5 have more than one position


def _features(seed, channels=8, size=(6, 5)):
    return torch.randn(1, channels, *size, generator=torch.Generator().manual_seed(seed)) * 3 + 1


def test_error_is_zero_for_the_teacher_one_for_its_channel_mean_and_ignores_scale():
    teacher = _features(0)
    assert errors.squared_error_map(teacher, teacher, "channel").abs().max() < 1e-10
    # Per-channel standardisation forgives a per-channel affine map, not a mixing of channels.
    affine = teacher * torch.arange(1.0, 9.0).view(1, 8, 1, 1) - 5
    assert errors.squared_error_map(affine, teacher, "channel").abs().max() < 1e-8
    mean = teacher.mean(dim=(2, 3), keepdim=True).expand_as(teacher)
    assert errors.squared_error_map(mean, teacher, "channel").mean() == pytest.approx(1, abs=1e-4)
    mixed = teacher.roll(1, dims=1)
    assert errors.squared_error_map(mixed, teacher, "channel").mean() > 0.5


def test_weighted_mean_weighs_positions_and_is_nan_without_weight():
    maps = [torch.tensor([[[1.0, 3.0]]]), torch.tensor([[[5.0, 7.0]]])]
    weights = [torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.5, 0.5]]])]
    assert errors.weighted_mean(maps, weights) == pytest.approx((1 + 2.5 + 3.5) / 2)
    assert math.isnan(errors.weighted_mean(maps, [torch.zeros(1, 1, 2)] * 2))


def test_linear_readout_recovers_a_linear_map_and_not_noise():
    teachers = [_features(i, channels=6, size=(8, 8)) for i in range(4)]
    mixing = torch.randn(6, 10, generator=torch.Generator().manual_seed(9))
    # The student: the teacher's channels mixed into 10 others, each with its own scale.
    students = [torch.einsum("nchw,cd->ndhw", t, mixing) * 4 + 2 for t in teachers]
    assert errors.linear_readout_error(students, teachers, "channel") < 0.05
    noise = [_features(10 + i, channels=10, size=(8, 8)) for i in range(4)]
    assert errors.linear_readout_error(noise, teachers, "channel") > 0.9
    with pytest.raises(ValueError, match="at least 2 images"):
        errors.linear_readout_error(students[:1], teachers[:1], "channel")


@pytest.fixture(scope="module")
def trained_runs(tiny_digits, module_tmp):
    """Run directories of an MKD, a mimic and an undistilled run (2 iterations each), the two
    distilled ones with one random R50 teacher."""
    root = module_tmp("diagnose_runs")
    teacher = root / "teacher.pth"
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(str(BUILTIN / "retinanet_R50_scratch.py")).model)
    torch.save({"model": model.state_dict()}, teacher)
    distilled = [f"model.teacher_weights={teacher}"]
    plans = {
        "mkd": ("retinanet_R50_to_R18_mkd.py", distilled + [
            "model.distiller.decoder.width=32", "model.masker.seed=0"]),
        "mimic": ("retinanet_R50_to_R18_mimic.py", distilled),
        "none": ("retinanet_R18_scratch.py", []),
    }
    directories = {}
    for name, (config, overrides) in plans.items():
        args, cfg = train_net_setup(BUILTIN / config, root / name, TINY + overrides)
        train_net.do_train(args, cfg)
        directories[name] = str(root / name)
    return directories


@pytest.fixture(scope="module")
def diagnosis(trained_runs, module_tmp):
    """The tool on the three runs; the mimic run given as config + checkpoint."""
    out = module_tmp("diagnosis")
    mimic = trained_runs["mimic"]
    measured = cli.main([
        "--runs", trained_runs["none"], trained_runs["mkd"], "--config-file",
        f"{mimic}/config.yaml", "--checkpoint", f"{mimic}/model_final.pth", "--images", "2",
        "--output-dir", str(out)])
    return {record.method: record for record in measured}, out


@pytest.mark.slow
def test_report_has_a_finite_row_per_level_and_every_figure(diagnosis):
    runs, out = diagnosis
    assert set(runs) == {"mkd", "mimic", "none"}
    expected = {
        "mkd": {errors.BASELINE, *errors.DECODER, errors.OTHER_STUDENT, errors.RAW,
                errors.READOUT},
        "mimic": {errors.BASELINE, errors.RAW, errors.READOUT, errors.ADAPTER},
        "none": {errors.BASELINE, errors.RAW, errors.READOUT},
    }
    for method, record in runs.items():
        assert [row["level"] for row in record.errors] == LEVELS
        for row in record.errors:
            assert set(row) - {"level", "positions/image"} == expected[method]
            assert all(math.isfinite(row[c]) and row[c] >= 0 for c in expected[method])
        baseline = [row[errors.BASELINE] for row in record.errors]
        assert baseline == pytest.approx([1.0] * SIGNAL + [0.0, 0.0], abs=1e-3)
        assert record.task_terms == ["loss_box_reg", "loss_cls"]
        assert record.task_losses["loss_cls"] > 0
    report = (out / "report.md").read_text()
    for section in ("## 1. Loss curves per term", "## 2. Reconstruction error per level",
                    "## 3. Per-level weighting (MKD and mimic runs)",
                    "## 4. MKD's and mimic's gradients on one student (E8)", "## Findings"):
        assert section in report
    error_tables = report.split("## 2.")[1].split("## 3.")[0]
    assert all(error_tables.count(f"| {level} |") == 3 for level in LEVELS)  # one per run
    assert "levels with no feature-loss signal: p6, p7" in report
    for name in ("loss_curves.png", "task_loss.png", "reconstruction_error.png",
                 "level_weighting.png"):
        assert (out / name).stat().st_size > 10_000, name


@pytest.mark.slow
def test_loss_curves_split_task_and_distillation_terms(diagnosis):
    runs, _ = diagnosis
    for method, terms in (("mkd", ["loss_mkd_feat", "loss_mkd_global"]), ("mimic", ["loss_mimic"])):
        rows = records.loss_rows(runs[method])
        assert [row["iteration"] for row in rows] == [1, 2]
        for row in rows:
            assert row["distillation"] == pytest.approx(sum(row[t] for t in terms))
            assert row["task"] == pytest.approx(row["loss_cls"] + row["loss_box_reg"])
            assert row["ratio"] == pytest.approx(row["distillation"] / row["task"])
    for row in records.loss_rows(runs["none"]):
        assert row["distillation"] == 0 and math.isnan(row["ratio"])


@pytest.mark.slow
def test_level_weighting_shares_sum_to_one_and_level_terms_sum_to_the_loss(diagnosis):
    runs, _ = diagnosis
    assert not runs["none"].weighting
    mkd = runs["mkd"]
    assert [row["level"] for row in mkd.weighting] == LEVELS
    for share in ("feature share", "global share", "feature grad share", "global grad share"):
        assert sum(row[share] for row in mkd.weighting) == pytest.approx(1.0)
    # The 1x1 P6 and P7 give the feature loss nothing, and no gradient; every level feeds the
    # global loss (standardised over channels too).
    for row in mkd.weighting[SIGNAL:]:
        assert row["feature term"] == 0 and row["feature grad share"] == 0
    assert all(row["feature grad share"] > 0 for row in mkd.weighting[:SIGNAL])
    assert all(row["global grad share"] > 0 for row in mkd.weighting)
    totals = mkd.gradients
    assert totals["feature loss, sum of level terms"] == pytest.approx(
        totals["feature loss, all levels at once"], rel=1e-5)
    assert totals["global loss, sum of level terms"] == pytest.approx(
        totals["global loss, all levels at once"], rel=1e-5)
    assert totals["task grad norm"] > 0 and totals["distillation grad norm"] > 0
    assert -1 <= totals["cosine(task grad, distillation grad)"] <= 1
    # Mimic, the control: the same feature loss on its adapter, no global loss.
    mimic = runs["mimic"]
    assert [row["level"] for row in mimic.weighting] == LEVELS
    assert sum(row["feature grad share"] for row in mimic.weighting) == pytest.approx(1.0)
    assert all(row["feature grad share"] > 0 for row in mimic.weighting[:SIGNAL])
    assert all(math.isnan(row["global term"]) for row in mimic.weighting)
    assert mimic.gradients["feature loss, sum of level terms"] == pytest.approx(
        mimic.gradients["feature loss, all levels at once"], rel=1e-5)


@pytest.fixture(scope="module")
def mkd_model(diagnosis):
    """The MKD run's model as the tool builds it, and two of its images."""
    run = diagnosis[0]["mkd"]
    model = records.build_model(run, seed=0, teacher_weights=None, device="cpu")
    return model, records.diagnosis_inputs(run.cfg, None, 2)


@pytest.mark.slow
def test_training_mode_measurements_leave_the_model_unchanged(mkd_model):
    model, inputs = mkd_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weighting.level_weighting(model, inputs)
    records.task_losses(model, inputs)
    assert not model.training
    for key, value in model.state_dict().items():  # BN running statistics included
        assert torch.equal(value, before[key]), key


class _OracleDecoder(torch.nn.Module):
    """Returns, image after image, the teacher's own features, whatever the student: a perfect
    reconstruction that reads nothing of the student."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = itertools.cycle(outputs)

    def forward(self, features, mask):
        return next(self.outputs)


@contextlib.contextmanager
def _decoder_replaced(model, decoder):
    """An nn.Module keeps its submodules outside ``__dict__``, where monkeypatch's undo deletes
    the attribute instead of restoring it: the module-scoped model must get its decoder back."""
    original = model.distiller.decoder
    model.distiller.decoder = decoder
    try:
        yield decoder
    finally:
        model.distiller.decoder = original


@pytest.mark.slow
def test_a_decoder_that_outputs_the_teacher_scores_zero(mkd_model):
    model, inputs = mkd_model
    teacher = errors.teacher_maps(model, inputs)
    trained = errors.reconstruction_errors(model, inputs, teacher, LEVELS, "channel")
    with _decoder_replaced(model, _OracleDecoder(teacher)):
        oracle = errors.reconstruction_errors(model, inputs, teacher, LEVELS, "channel")
    for before, after in zip(trained[:SIGNAL], oracle[:SIGNAL]):  # 1x1 maps: zero either way
        for column in errors.DECODER:
            assert before[column] > 0.1 and after[column] == pytest.approx(0, abs=1e-6)
        # The oracle ignores its input: fed another image's student it is just as perfect.
        assert after[errors.OTHER_STUDENT] == pytest.approx(0, abs=1e-6)
        assert before[errors.OTHER_STUDENT] > 0.1
        for column in (errors.BASELINE, errors.RAW, errors.READOUT):  # decoder-free
            assert after[column] == pytest.approx(before[column])


def test_refuses_unfinished_runs_and_runs_without_a_teacher(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a finished run: .*config\.yaml.* missing"):
        cli.main(["--runs", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    LazyConfig.save(LazyConfig.load(str(BUILTIN / "retinanet_R18_scratch.py")),
                    str(tmp_path / "config.yaml"))
    (tmp_path / "model_final.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="no distilled run among the runs.*add one"):
        cli.main(["--runs", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        cli.parse_args(["--runs", str(tmp_path), "--images", "1"])


class _RecordingDecoder(torch.nn.Module):
    """The trained decoder, keeping the features it was given."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder, self.seen = decoder, []

    def forward(self, features, mask):
        self.seen.append(features)
        return self.decoder(features, mask)


@pytest.mark.slow
def test_the_decoder_is_scored_on_the_masked_pass_as_training_ran_it(mkd_model):
    """BN in training mode (batch statistics over visible positions), not eval mode's running
    statistics; the model's mode and state unchanged afterwards."""
    model, inputs = mkd_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher = errors.teacher_maps(model, inputs)
    with _decoder_replaced(model, _RecordingDecoder(model.distiller.decoder)) as recorder:
        errors.reconstruction_errors(model, inputs, teacher, LEVELS, "channel")
    seen = recorder.seen
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    images = model.student.preprocess_image(inputs[:1]).tensor
    mask = model.masker([tuple(inputs[0]["image"].shape[-2:])],
                        [image_key(inputs[0], 0)], step=0)
    with torch.no_grad():
        in_eval = model.masked_student_features(images, mask)
        with records.training_mode(model):  # restores the running statistics
            in_training = model.masked_student_features(images, mask)
    for level in ("p3", "p4"):
        torch.testing.assert_close(seen[0][level], in_training[level])
        assert not torch.allclose(seen[0][level], in_eval[level], atol=1e-3)


def test_the_tool_is_the_diagnosis_command_line(capsys):
    """tools/diagnose_mkd.py only runs ``mkd_bench.diagnose.cli``: the options and sections are
    its."""
    with pytest.raises(SystemExit) as exited:
        run_tool("diagnose_mkd", ["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert "**Per-level weighting**" in printed and "--teacher-weights" in printed


@pytest.mark.slow
def test_gradient_directions_agree_for_one_distiller_and_follow_the_student(diagnosis):
    """Section 4 with MKD's model in both places is one gradient twice: cosine 1, ratio 1 at
    every level; another student's weights give other gradients; the rows name each student."""
    runs, _ = diagnosis
    inputs = records.diagnosis_inputs(runs["mkd"].cfg, None, 2)

    def build(method):
        return records.build_model(runs[method], seed=0, teacher_weights=None, device="cpu")

    students = {name: build(name) for name in ("mkd", "none")}
    students = {"mkd": students["mkd"].student.state_dict(),
                "none": students["none"].state_dict()}
    rows, totals = directions.gradient_directions(build("mkd"), build("mkd"), students, inputs)
    assert [(r["student"], r["level"]) for r in rows] == [
        (name, level) for name in students for level in [*LEVELS, directions.ALL_LEVELS]]
    for row in rows:
        assert row["MKD grad"] > 0 and row["mimic / MKD"] == pytest.approx(1.0)
        assert row["cosine(MKD, mimic)"] == pytest.approx(1.0, abs=1e-5)
    by_student = {name: [r["MKD grad"] for r in rows if r["student"] == name] for name in students}
    assert by_student["mkd"] != pytest.approx(by_student["none"])
    assert [t["student"] for t in totals] == list(students)
    assert all(-1 <= t["cosine(MKD, task)"] <= 1 and t["task grad"] > 0 for t in totals)

    mkd_and_mimic, _ = directions.gradient_directions(build("mkd"), build("mimic"),
                                                      {"mkd": students["mkd"]}, inputs)
    assert all(-1 <= r["cosine(MKD, mimic)"] < 1 - 1e-3 for r in mkd_and_mimic)
