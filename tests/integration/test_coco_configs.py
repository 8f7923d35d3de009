"""configs/coco/*.py as a user runs them, with no download: stand-in weight files in the real
formats where ``detectron2://`` resolves, and a tiny dataset in COCO's real layout.

Only the device, the data loader and image sizes are overridden; every model field is the
config's own, except the score threshold of the end-to-end evaluation (see there). The
distillation configs (MKD, and mimic, FGD and MGD at their published weights) and the plain
students' configs are told apart by their model: a teacher, or none.
"""
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.utils.events import EventStorage
from detectron2.utils.file_io import PathManager
from omegaconf import OmegaConf

from mkd.engine import train as train_net
from tests import helpers
from tests.helpers import REPO, train_net_setup
from tests.integration import standins

COCO = REPO / "configs" / "coco"
CONFIGS = sorted(COCO.glob("*.py"))
#: Each plain student's config, and the MKD config whose student it is.
STUDENT_CONFIGS = {
    "retinanet_R50_2x": "retinanet_R101_to_R50_mkd_2x",
    "retinanet_R18_2x": "retinanet_R50_to_R18_mkd_2x",
    "faster_rcnn_R50_2x": "faster_rcnn_R101_to_R50_mkd_2x",
    "mask_rcnn_R50_2x": "mask_rcnn_R101_to_R50_mkd_2x",
}
DISTILLATION_CONFIGS = [c for c in CONFIGS if c.stem not in STUDENT_CONFIGS]
#: The loss each distiller adds to the student's.
DISTILLATION_LOSS = {"MKDDistiller": "loss_mkd_feat", "MimicDistiller": "loss_mimic",
                     "FGDDistiller": "loss_fgd_fg", "MGDDistiller": "loss_mgd"}
#: The kind of each student weight file the configs name, and the input its weights expect.
STUDENT_WEIGHTS = {
    "detectron2://ImageNetPretrained/MSRA/R-50.pkl": ("msra", standins.MSRA_INPUT),
    "./R-18.pkl": ("torchvision", standins.TORCHVISION_INPUT),
}
BOTTOM_UP = "backbone.bottom_up."


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """$FVCORE_CACHE and the working directory (for ``./R-18.pkl``) of the stand-in weights,
    and the tensors of each file written, by config path. A file is written once: iopath
    remembers where it found a URL, for the whole process. The files (about 1 GB) are
    removed afterwards."""
    root = tmp_path_factory.mktemp("coco_weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FVCORE_CACHE", str(root / "cache"))
        patch.chdir(root)
        yield {"root": root, "written": {}}
    shutil.rmtree(root)


def build(model_cfg, **overrides):
    """``model_cfg`` instantiated from seed 0, with ``overrides`` on a copy."""
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg.update(overrides)
    torch.manual_seed(0)
    return instantiate(model_cfg)


def provide_weights(cfg, weight_files, reference=None):
    """Writes the stand-ins of the config's teacher and student weights, unless written, from
    ``reference`` (built here if needed): the config's model loading no weights. Returns the
    tensors of the teacher file and of the student file."""
    written, cache = weight_files["written"], weight_files["root"] / "cache"
    teacher_path, student_path = cfg.model.teacher_weights, cfg.model.student_weights
    if {teacher_path, student_path} - set(written) and reference is None:
        reference = build(cfg.model, teacher_weights=None, student_weights=None)
    if teacher_path not in written:
        written[teacher_path] = standins.write_model_zoo_pkl(
            standins.local_path(teacher_path, cache), reference.teacher.state_dict())
    if student_path not in written:
        target = standins.local_path(student_path, cache)
        if STUDENT_WEIGHTS[student_path][0] == "msra":
            written[student_path] = standins.write_msra_pkl(
                target, reference.student.backbone.bottom_up.state_dict())
        else:
            depth = cfg.model.student.backbone.bottom_up.stages.depth
            written[student_path] = standins.write_torchvision_pkl(target, depth)
    for path in (teacher_path, student_path):  # iopath finds the stand-in, downloads nothing
        assert os.path.samefile(PathManager.get_local_path(path), standins.local_path(path, cache))
    return written[teacher_path], written[student_path]


def differing(state, expected, keys):
    """The keys among ``keys`` whose tensor in ``state`` is not exactly ``expected``'s."""
    return [k for k in keys if not torch.equal(state[k], expected[k].to(state[k].dtype))]


def check_normalisation(model, cfg, student_input):
    """The student reads what its weights were trained on, and so does the data loader; the
    teacher reads what the model zoo trained it on (MSRA's)."""
    for detector, (input_format, mean, std) in ((model.student, student_input),
                                                 (model.teacher, standins.MSRA_INPUT)):
        assert detector.input_format == input_format
        assert detector.pixel_mean.flatten().tolist() == pytest.approx(mean)
        assert detector.pixel_std.flatten().tolist() == pytest.approx(std)
    assert cfg.dataloader.train.mapper.image_format == student_input[0]
    assert cfg.dataloader.test.mapper.image_format == student_input[0]


def test_stand_in_names_are_those_detectron2_converts():
    """MSRA and torchvision stand-ins carry the names the real files have."""
    assert standins.msra_name("stem.conv1.weight") == "conv1_w"
    assert standins.msra_name("stem.conv1.norm.bias") == "res_conv1_bn_b"
    assert standins.msra_name("res2.0.shortcut.norm.weight") == "res2_0_branch1_bn_s"
    assert standins.msra_name("res5.2.conv3.weight") == "res5_2_branch2c_w"
    assert standins.msra_name("res3.1.conv1.norm.running_var") is None
    assert standins.torchvision_to_detectron2("conv1.weight") == "stem.conv1.weight"
    assert standins.torchvision_to_detectron2("bn1.running_mean") == "stem.conv1.norm.running_mean"
    assert standins.torchvision_to_detectron2("layer4.0.downsample.1.weight") == \
        "res5.0.shortcut.norm.weight"
    assert standins.torchvision_to_detectron2("layer1.1.bn2.bias") == "res2.1.conv2.norm.bias"


def test_every_coco_config_is_a_distillation_or_a_listed_student():
    for config in CONFIGS:
        model = LazyConfig.load(str(config)).model
        assert ("teacher" in model) == (config.stem not in STUDENT_CONFIGS), config.name
    assert {c.stem for c in CONFIGS} >= set(STUDENT_CONFIGS) | set(STUDENT_CONFIGS.values())


@pytest.mark.slow
@pytest.mark.parametrize("config", DISTILLATION_CONFIGS, ids=lambda path: path.stem)
def test_config_loads_its_weights_and_trains_a_step(config, weight_files):
    cfg = LazyConfig.load(str(config))
    assert cfg.train.init_checkpoint == ""  # nothing loaded on top of teacher/student weights
    kind, student_input = STUDENT_WEIGHTS[cfg.model.student_weights]
    reference = build(cfg.model, teacher_weights=None, student_weights=None)
    teacher_file, student_file = provide_weights(cfg, weight_files, reference)

    model = build(cfg.model)  # the config as is: loads both files

    check_normalisation(model, cfg, student_input)
    # The teacher is the file's, every tensor of it.
    teacher_state = model.teacher.state_dict()
    assert set(teacher_state) <= set(teacher_file)
    assert differing(teacher_state, teacher_file, teacher_state) == []
    # The student's bottom-up network is the file's (MSRA files hold no BN statistics) ...
    student_state, reference_state = model.student.state_dict(), reference.student.state_dict()
    bottom_up = [k for k in student_state if k.startswith(BOTTOM_UP)]
    from_file = [k for k in bottom_up if k[len(BOTTOM_UP):] in student_file]
    assert set(bottom_up) - set(from_file) == (
        {k for k in bottom_up if "running_" in k} if kind == "msra" else set())
    assert differing({k[len(BOTTOM_UP):]: student_state[k] for k in from_file}, student_file,
                     [k[len(BOTTOM_UP):] for k in from_file]) == []
    # ... and nothing else was loaded: the rest of the student, and the decoder and losses,
    # are as built.
    rest = [k for k in student_state if not k.startswith(BOTTOM_UP)]
    assert differing(student_state, reference_state, rest) == []
    distiller, reference_distiller = model.distiller.state_dict(), reference.distiller.state_dict()
    assert distiller and differing(distiller, reference_distiller, distiller) == []

    # One training step on tiny images.
    model.train()
    with EventStorage(0):
        losses = model(helpers.batch(with_masks=bool(cfg.dataloader.train.mapper.use_instance_mask)))
    assert DISTILLATION_LOSS[cfg.model.distiller._target_.__name__] in losses
    assert all(math.isfinite(v.item()) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    # freeze_at=2 (ImageNet init, as Detectron2's own COCO configs): stem and res2 stay fixed.
    for name, p in model.student.backbone.bottom_up.named_parameters():
        frozen = name.startswith(("stem.", "res2."))
        assert (p.grad is None) == frozen, name


def test_baselines_are_at_their_published_weights():
    distillers = {c.stem: LazyConfig.load(str(c)).model.distiller for c in DISTILLATION_CONFIGS}
    fgd = distillers["retinanet_R101_to_R50_fgd_2x"]
    assert (fgd.temperature, fgd.alpha_fg, fgd.beta_bg, fgd.gamma_attention,
            fgd.lambda_global) == (0.5, 1e-3, 5e-4, 5e-4, 5e-6)
    mgd = distillers["retinanet_R101_to_R50_mgd_2x"]
    assert (mgd.alpha, mgd.mask_ratio) == (2e-5, 0.65)
    assert distillers["retinanet_R101_to_R50_mimic_2x"].weight == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STUDENT_CONFIGS))
def test_student_config_is_the_mkd_student_from_its_imagenet_weights(name, weight_files):
    """Each plain student config is its MKD config's student, data and schedule, starting from
    the student's ImageNet file through Detectron2's train.init_checkpoint; it trains a step."""
    cfg = LazyConfig.load(str(COCO / f"{name}.py"))
    mkd_cfg = LazyConfig.load(str(COCO / f"{STUDENT_CONFIGS[name]}.py"))
    assert OmegaConf.to_container(cfg.model) == OmegaConf.to_container(mkd_cfg.model.student)
    for section in ("dataloader", "optimizer", "lr_multiplier"):
        assert OmegaConf.to_container(cfg[section]) == OmegaConf.to_container(mkd_cfg[section])
    assert cfg.train.max_iter == mkd_cfg.train.max_iter
    assert cfg.train.init_checkpoint == mkd_cfg.model.student_weights
    assert cfg.train.output_dir == f"./output/coco/{name}"

    _, student_file = provide_weights(mkd_cfg, weight_files)
    model = build(cfg.model)
    DetectionCheckpointer(model).load(cfg.train.init_checkpoint)  # as train_net would
    state = model.state_dict()
    loaded = [k[len(BOTTOM_UP):] for k in state
              if k.startswith(BOTTOM_UP) and k[len(BOTTOM_UP):] in student_file]
    assert loaded and differing({k: state[BOTTOM_UP + k] for k in loaded}, student_file,
                                loaded) == []
    model.train()
    with EventStorage(0):
        losses = model(helpers.batch(with_masks=bool(cfg.dataloader.train.mapper.use_instance_mask)))
    assert all(math.isfinite(v.item()) for v in losses.values()), losses


def test_configs_read_coco_on_a_2x_schedule_with_masks_only_for_mask_rcnn():
    for config in CONFIGS:
        cfg = LazyConfig.load(str(config))
        models = [cfg.model.student, cfg.model.teacher] if "teacher" in cfg.model else [cfg.model]
        has_masks = "roi_heads" in models[0] and models[0].roi_heads.mask_head is not None
        assert cfg.dataloader.train.mapper.use_instance_mask == has_masks, config.name
        for model in models[1:]:
            assert ("roi_heads" in model and model.roi_heads.mask_head is not None) == has_masks
        assert cfg.dataloader.train.dataset.names == "coco_2017_train"
        assert cfg.dataloader.test.dataset.names == "coco_2017_val"
        assert cfg.dataloader.evaluator.dataset_name == "coco_2017_val"
        assert cfg.train.output_dir == f"./output/coco/{config.stem}"
        # 2x: 180k iterations of 16 images, LR steps at 120k and 160k (the scheduler's
        # milestones are relative to its last one).
        assert cfg.train.max_iter == 180000 and cfg.dataloader.train.total_batch_size == 16
        scheduler = cfg.lr_multiplier.scheduler
        steps = [m / scheduler.milestones[-1] * cfg.train.max_iter for m in scheduler.milestones]
        assert steps[:2] == [120000, 160000]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_missing_coco_names_where_it_is_expected(config, tmp_path, monkeypatch):
    # Detectron2 registered COCO at import, under $DETECTRON2_DATASETS (default ./datasets).
    monkeypatch.chdir(tmp_path)
    expected = MetadataCatalog.get("coco_2017_train").json_file
    if os.path.exists(expected):
        pytest.skip("COCO is installed here")
    args, cfg = train_net_setup(config, tmp_path / "out", ["train.device=cpu"])
    with pytest.raises(FileNotFoundError) as error:
        train_net.do_train(args, cfg)
    message = str(error.value)
    assert "coco_2017_train" in message and expected in message
    assert "$DETECTRON2_DATASETS" in message
    assert "coco/{annotations/instances_train2017.json,train2017/,val2017/}" in message


# -- tools/train_net.py end to end, on a tiny COCO ---------------------------------------------
TINY_RUN = [
    "train.device=cpu", "train.max_iter=2", "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
    "dataloader.train.mapper.augmentations.0.max_size=96",
    "dataloader.test.mapper.augmentations.0.short_edge_length=64",
    "dataloader.test.mapper.augmentations.0.max_size=96",
]
#: A 2-iteration student scores below the configs' 0.05: keep its boxes so COCO's evaluation
#: (and its mapping back to COCO's category ids) runs on some.
KEEP_ALL_BOXES = {
    "RetinaNet": "model.student.test_score_thresh=0.0",
    "GeneralizedRCNN": "model.student.roi_heads.box_predictor.test_score_thresh=0.0",
}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    standins.write_coco(root)
    return root


def run_train_net(config, env, cwd, *args):
    """tools/train_net.py as a user runs it; returns its log."""
    command = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(config)]
    result = subprocess.run(command + list(args), cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


def copypaste_results(log):
    """The evaluation results Detectron2 prints as ``copypaste:`` lines, by task and metric."""
    lines = re.findall(r"copypaste: (.*)", log)
    results = {}
    for i, line in enumerate(lines):
        if line.startswith("Task: "):
            names, values = lines[i + 1].split(","), lines[i + 2].split(",")
            results[line[len("Task: "):]] = dict(zip(names, values))
    return results


#: End to end: the MKD configs, and one plain student (its ImageNet start through
#: train.init_checkpoint). The baselines differ from their MKD config by the distiller only.
END_TO_END = [c for c in CONFIGS if c.stem.endswith("_mkd_2x") or c.stem == "retinanet_R18_2x"]


@pytest.mark.slow
@pytest.mark.parametrize("config", END_TO_END, ids=lambda path: path.stem)
def test_train_net_trains_then_evaluates_on_coco_layout(config, coco_root, weight_files, tmp_path):
    cfg = LazyConfig.load(str(config))
    plain = config.stem in STUDENT_CONFIGS
    mkd_config = COCO / f"{STUDENT_CONFIGS[config.stem]}.py" if plain else config
    provide_weights(LazyConfig.load(str(mkd_config)), weight_files)
    env = dict(os.environ, DETECTRON2_DATASETS=str(coco_root), OMP_NUM_THREADS="1",
               FVCORE_CACHE=str(weight_files["root"] / "cache"))
    student = cfg.model if plain else cfg.model.student
    keep_boxes = KEEP_ALL_BOXES[student._target_.__name__]
    if plain:
        keep_boxes = keep_boxes.replace("model.student.", "model.")
    out = tmp_path / "train"
    log = run_train_net(config, env, weight_files["root"], *TINY_RUN, keep_boxes,
                        f"train.output_dir={out}", f"dataloader.evaluator.output_dir={out}")
    trained = copypaste_results(log)
    tasks = {"bbox", "segm"} if cfg.dataloader.train.mapper.use_instance_mask else {"bbox"}
    assert set(trained) == tasks
    for task in tasks:
        assert all(math.isfinite(float(trained[task][k])) for k in ("AP", "AP50", "AP75"))
    # Predictions go back to COCO's own image and category ids (contiguous ids 0..79 inside).
    predictions = json.loads((out / "coco_instances_results.json").read_text())
    val = json.loads((coco_root / "coco/annotations/instances_val2017.json").read_text())
    assert {p["image_id"] for p in predictions} <= {image["id"] for image in val["images"]}
    assert {p["category_id"] for p in predictions} <= {c["id"] for c in val["categories"]}

    log = run_train_net(config, env, weight_files["root"], "--eval-only", *TINY_RUN, keep_boxes,
                        f"train.output_dir={tmp_path / 'eval'}",
                        f"train.init_checkpoint={out / 'model_final.pth'}")
    assert copypaste_results(log) == trained
