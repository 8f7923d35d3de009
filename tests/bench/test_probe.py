"""The probe of any distillation config (mkd_bench.probe, tools/probe_distillation.py): loss and
gradient ratios at initialisation, the losses the benchmark's calibration reads, refused
overrides."""
import copy
import math

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.events import EventStorage

import mkd_bench.probe
from mkd.modeling.distillers import MimicDistiller
from mkd_bench import tuning
from mkd_bench.probe import main as probe_main
from tests import helpers
from tests.helpers import REPO, make_mkd

BUILTIN = REPO / "configs" / "builtin"
#: A batch of two images, a narrow decoder: a quick probe of the built-in pair.
SMALL = ["dataloader.train.total_batch_size=2", "model.distiller.decoder.width=32"]


@pytest.fixture(scope="module")
def teacher_weights(module_tmp):
    """A checkpoint of the built-in pair's teacher (untrained: the mechanics suffice)."""
    path = module_tmp("teacher") / "teacher.pth"
    model = instantiate(LazyConfig.load(str(BUILTIN / "retinanet_R50_scratch.py")).model)
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def distiller_keys(losses):
    return {k for k in losses if k.startswith(("loss_mkd", "loss_mgd", "loss_mimic", "loss_fgd"))}


@pytest.mark.slow
@pytest.mark.parametrize("config,overrides", [
    ("retinanet_R50_to_R18_mkd.py", SMALL),
    ("retinanet_R50_to_R18_mgd.py", SMALL[:1]),
])
def test_the_command_reports_loss_and_gradient_ratios(tiny_digits, teacher_weights, tmp_path,
                                                      config, overrides):
    results = probe_main(["--config-file", str(BUILTIN / config), "--batches", "2",
                         "--json", str(tmp_path / "probe.json"),
                         f"model.teacher_weights={teacher_weights}", *overrides])
    losses = results["losses"]
    distilled = distiller_keys(losses)
    assert distilled and {"loss_cls", "loss_box_reg"} <= set(losses) - distilled
    assert results["distillation_loss"] == pytest.approx(sum(losses[k] for k in distilled))
    assert results["task_loss"] == pytest.approx(losses["loss_cls"] + losses["loss_box_reg"])
    for name in ("loss", "fpn_grad", "bottom_up_grad"):
        task, distillation = results[f"task_{name}"], results[f"distillation_{name}"]
        assert math.isfinite(task) and task > 0 and math.isfinite(distillation)
        assert distillation > 0, name
        assert results[f"{name}_ratio"] == pytest.approx(distillation / task)
    assert (tmp_path / "probe.json").stat().st_size > 0


@pytest.mark.slow
def test_the_benchmarks_calibration_reads_the_probes_numbers(tiny_digits, teacher_weights):
    """The benchmark's probe_config (its --probe) is the library's probe of the run's config:
    the same losses and gradient ratios from the same seed and batches."""
    config = str(BUILTIN / "retinanet_R50_to_R18_mimic.py")
    overrides = [f"model.teacher_weights={teacher_weights}", *SMALL[:1]]
    calibrated = tuning.probe_config(config, overrides, 1)
    probed = probe_main(["--config-file", config, "--batches", "1", *overrides])
    assert calibrated["losses"].keys() == probed["losses"].keys()
    for key, value in calibrated["losses"].items():
        assert probed["losses"][key] == pytest.approx(value, rel=1e-5), key
    for key in ("loss_ratio", "fpn_grad_ratio", "bottom_up_grad_ratio"):
        assert probed[key] == pytest.approx(calibrated[key], rel=1e-4), key


def test_gradient_norms_are_those_of_each_losss_own_backward(tmp_path):
    """Each norm equals the one a plain backward of that sum alone leaves in the student's
    bottom-up parameters; ``.grad`` stays untouched by the probe."""
    initial = make_mkd(tmp_path, distiller=MimicDistiller(weight=3.0), masker=None)
    batch = helpers.batch()
    model = copy.deepcopy(initial)  # a forward updates RetinaNet's loss normaliser
    with EventStorage(0):
        measured = mkd_bench.probe.gradient_ratio(model, batch)
    assert all(p.grad is None for p in model.parameters())
    for name in ("task", "distillation"):
        model = copy.deepcopy(initial)
        bottom_up = list(model.student.backbone.bottom_up.parameters())
        with EventStorage(0):
            losses = model(batch)
        chosen = [v for k, v in losses.items() if (k == "loss_mimic") == (name == "distillation")]
        sum(chosen).backward()
        norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in bottom_up if p.grad is not None))
        assert measured[f"{name}_bottom_up_grad"] == pytest.approx(norm, rel=1e-4), name
        assert measured[f"{name}_loss"] == pytest.approx(float(sum(chosen)), rel=1e-5)


def test_refuses_an_unknown_override_before_building_anything(teacher_weights):
    with pytest.raises(KeyError, match="did you mean model.distiller.feature_weight"):
        probe_main(["--config-file", str(BUILTIN / "retinanet_R50_to_R18_mkd.py"),
                   f"model.teacher_weights={teacher_weights}",
                   "model.distiller.feature_wieght=2"])


def test_refuses_a_model_that_does_not_distil(tmp_path):
    with EventStorage(0), pytest.raises(ValueError, match="the model must be MKD"):
        mkd_bench.probe.gradient_ratio(helpers.build(), helpers.batch())
