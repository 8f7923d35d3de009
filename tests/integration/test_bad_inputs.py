"""The bad-input catalogue (issue #12): each case stops with an error that names the problem and
the fix, and writes or overwrites nothing on the way (no new checkpoint, earlier files
byte-identical).

Case -> test (here):

- teacher file missing, truncated (.pth, model-zoo .pkl), not a checkpoint (an HTML error page),
  another family's (Faster R-CNN), another depth (ResNet-50), another class count ->
  test_unusable_teacher_file[missing | truncated .pth | truncated .pkl | html page |
  faster r-cnn | resnet-50 | 3 classes]
- student file of another architecture -> test_student_file_of_another_architecture
- teacher and student with no shared FPN level -> test_no_shared_fpn_level
- a shared level whose strides differ -> test_shared_level_with_other_strides
- mask_ratio outside [0, 1) -> test_mask_ratio_outside_0_1[-0.25 | 1.0]
- a patch_size the FPN strides neither divide nor are multiples of ->
  test_patch_size_incompatible_with_the_strides (the decoder's error reaches the user unchanged)
- images smaller than one patch -> test_image_inside_one_patch
- an empty dataset -> test_empty_dataset
- a dataset with no annotations, or crowd regions only -> test_dataset_without_objects
- a built-in dataset root that cannot be written -> test_builtin_dataset_root_not_writable
- an unwritable output dir -> test_unwritable_output_dir
- an unknown override key -> test_unknown_override_key (and the keys a config may lack but an
  override may add: test_overrides_that_add_known_keys)
- a non-finite loss: the iteration, the term and the last good checkpoint named, the checkpoint
  kept -> test_non_finite_loss_keeps_the_last_checkpoint[3 | 0]

Cases tested elsewhere (not repeated here):

- ``train.init_checkpoint`` holding a plain detector where MKD expects ``student.*``:
  test_weights.py::test_train_init_checkpoint_of_an_mkd_model_must_hold_the_student (training)
  and test_train_mkd.py::test_eval_only_refuses_a_missing_or_foreign_checkpoint (--eval-only).
- an MKD training checkpoint given as the teacher, a teacher file missing parameters or with
  other shapes: test_meta_arch.py::test_missing_and_partial_teacher_weights_raise,
  test_weights.py::test_missing_keys_are_counted, ::test_wrong_shapes_are_counted.
- a missing ``train.init_checkpoint`` of a plain detector:
  test_weights.py::test_a_missing_init_checkpoint_of_a_plain_detector_names_the_commands.
- a missing COCO (or other registered) path: test_train_net.py::test_missing_coco_is_a_clear_error,
  test_dataset.py (missing files: the layout expected and the override to the built-in data);
  Cityscapes and ADE20K: test_sem_seg.py; an unregistered dataset name:
  test_dataset.py::test_unknown_dataset_name_says_how_to_register.
- bad masker / decoder / loss arguments: test_masking.py::test_bad_mask_ratio_and_patch_size,
  test_decoder_losses.py (normalize, positions, reduction, channels).
"""
import json
import pickle

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import default_argument_parser
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import get_event_storage
from omegaconf import OmegaConf
from torch import nn

import mkd_bench.datasets
from mkd import MKD, PatchMasker
from mkd.engine import train as train_net
from mkd.engine.datasets import check_training_data
from mkd.engine.overrides import apply_known_overrides
from tests import helpers
from tests.helpers import REPO, mkd_distiller, read_tree

MKD_CONFIG = REPO / "configs" / "builtin" / "retinanet_R18_to_R18_mkd.py"
PLAIN_CONFIG = REPO / "configs" / "builtin" / "retinanet_R18_scratch.py"


def run(config, output_dir, *overrides):
    """tools/train_net.py's main, as from its command line (training)."""
    argv = ["--config-file", str(config), f"train.output_dir={output_dir}",
            "dataloader.train.num_workers=0", "dataloader.test.num_workers=0", *overrides]
    return train_net.main(default_argument_parser().parse_args(argv))


@pytest.fixture
def previous_run(tmp_path):
    """An output directory holding an earlier run's checkpoints; returns (directory, its files)."""
    output = tmp_path / "output"
    output.mkdir()
    (output / "model_0000009.pth").write_bytes(b"an earlier run's weights")
    (output / "last_checkpoint").write_text("model_0000009.pth")
    return output, read_tree(output)


def assert_no_checkpoint_written(output, before):
    """The earlier checkpoints are byte-identical and no other was written (default_setup's log
    and config.yaml may be)."""
    after = read_tree(output)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k not in before and (k.endswith(".pth") or "checkpoint" in k)]


@pytest.fixture(scope="module")
def weight_files(module_tmp):
    """Teacher/student files of the MKD config's models, good and bad."""
    root = module_tmp("weights")
    model = LazyConfig.load(str(MKD_CONFIG)).model
    torch.manual_seed(0)
    teacher = instantiate(model.teacher).state_dict()
    torch.save({"model": teacher}, root / "teacher.pth")
    whole = (root / "teacher.pth").read_bytes()
    (root / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    zoo = pickle.dumps({"model": {k: v.numpy() for k, v in teacher.items()},
                        "__author__": "Detectron2 Model Zoo"})
    (root / "truncated.pkl").write_bytes(zoo[: len(zoo) // 2])
    # What a download that hit an error page saves.
    (root / "page.pkl").write_text("<html><body><h1>404 Not Found</h1></body></html>")
    torch.save({"model": helpers.build("faster_rcnn", 18, 32).state_dict()}, root / "frcnn.pth")
    r50 = LazyConfig.load(str(REPO / "configs" / "builtin" / "retinanet_R50_scratch.py")).model
    torch.save({"model": instantiate(r50).state_dict()}, root / "r50.pth")
    model.teacher.num_classes = 3
    torch.save({"model": instantiate(model.teacher).state_dict()}, root / "3_classes.pth")
    return root


FIX = (r"Check that the teacher config matches the checkpoint \(depth, classes, FPN\), or point "
       r"model\.teacher_weights at weights of this teacher model")
UNREADABLE = (r"could not be read \({}.*A truncated file \(an interrupted download or copy\) or "
              r"a file that is not a checkpoint .* download or copy it again, or point "
              r"model\.teacher_weights at a complete checkpoint")
TEACHER_CASES = {
    "missing": ("absent.pth", FileNotFoundError,
                r"teacher weights not found: \S*absent\.pth\. Produce them first.*point "
                r"model\.teacher_weights at an existing checkpoint"),
    "truncated .pth": ("truncated.pth", RuntimeError,
                       UNREADABLE.format("RuntimeError: PytorchStreamReader failed")),
    "truncated .pkl": ("truncated.pkl", RuntimeError,
                       UNREADABLE.format("UnpicklingError: pickle data was truncated")),
    "html page": ("page.pkl", RuntimeError,
                  UNREADABLE.format("UnpicklingError: invalid load key, '<'")),
    "faster r-cnn": ("frcnn.pth", RuntimeError,
                     r"frcnn\.pth do not fit the teacher model: [1-9]\d* of \d+ "
                     rf"parameters/buffers missing.*{FIX}"),
    "resnet-50": ("r50.pth", RuntimeError,
                  r"r50\.pth do not fit the teacher model: \d+ of \d+ parameters/buffers missing"
                  r"; [1-9]\d* with mismatched shapes .*\('backbone\.fpn_lateral3\.weight', "
                  rf"\(128, 512, 1, 1\), \(128, 128, 1, 1\)\).*{FIX}"),
    "3 classes": ("3_classes.pth", RuntimeError,
                  r"3_classes\.pth do not fit the teacher model: 0 of \d+ parameters/buffers "
                  r"missing; 2 with mismatched shapes \(name, file, model\), e\.g\. "
                  rf"\[\('head\.cls_score\.weight', \(27, 128, 3, 3\), \(90, 128, 3, 3\)\).*{FIX}"),
}


@pytest.mark.parametrize("case", list(TEACHER_CASES))
def test_unusable_teacher_file(tiny_digits, weight_files, previous_run, case):
    name, error, message = TEACHER_CASES[case]
    path = weight_files / name
    content = path.read_bytes() if path.exists() else None
    output, before = previous_run
    with pytest.raises(error, match=message):
        run(MKD_CONFIG, output, f"model.teacher_weights={path}")
    assert_no_checkpoint_written(output, before)
    assert (path.read_bytes() if path.exists() else None) == content


def test_student_file_of_another_architecture(tiny_digits, weight_files, previous_run):
    """A ResNet-50 detector's weights as the ResNet-18 student's (e.g. an ImageNet file)."""
    output, before = previous_run
    with pytest.raises(RuntimeError, match=r"student weights \S+r50\.pth do not fit the student "
                                           r"model: \d+ of \d+ backbone\.bottom_up\.\* parameters"
                                           r"/buffers missing.*mismatched shapes.*point "
                                           r"model\.student_weights at weights of this student"):
        run(MKD_CONFIG, output, f"model.teacher_weights={weight_files / 'teacher.pth'}",
            f"model.student_weights={weight_files / 'r50.pth'}")
    assert_no_checkpoint_written(output, before)


def test_no_shared_fpn_level():
    """A teacher without an FPN: its backbone's levels are res3-res5."""
    teacher = helpers.build("retinanet", 34)
    teacher.backbone = teacher.backbone.bottom_up
    with pytest.raises(ValueError, match=r"Teacher levels \['res3', 'res4', 'res5'\] and student "
                                         r"levels \['p3', .*'p7'\] share none.*Give both models "
                                         r"an FPN-style backbone"):
        MKD(student=helpers.build(), teacher=teacher, distiller=mkd_distiller(),
            masker=PatchMasker())


class _Backbone(nn.Module):
    def __init__(self, strides):
        super().__init__()
        self.strides = strides

    def output_shape(self):
        return {k: ShapeSpec(channels=32, stride=s) for k, s in self.strides.items()}


def test_shared_level_with_other_strides():
    teacher = nn.Module()
    teacher.backbone = _Backbone({"p3": 16, "p4": 16, "p5": 32})
    with pytest.raises(ValueError, match=r"p3 has stride 8 in the student and 16 in the teacher\. "
                                         r"Set model\.levels to levels whose strides agree "
                                         r"\(\['p4', 'p5'\]\)"):
        MKD(student=helpers.build(), teacher=teacher, distiller=mkd_distiller(),
            masker=PatchMasker(), levels=["p3", "p4", "p5"])


@pytest.mark.parametrize("ratio", [-0.25, 1.0])
def test_mask_ratio_outside_0_1(tiny_digits, weight_files, previous_run, ratio):
    output, before = previous_run
    with pytest.raises(ValueError, match=rf"mask_ratio must lie in \[0, 1\).*got {ratio}: set "
                                         r"model\.masker\.mask_ratio to e\.g\. 0\.5"):
        run(MKD_CONFIG, output, f"model.teacher_weights={weight_files / 'teacher.pth'}",
            f"model.masker.mask_ratio={ratio}")
    assert_no_checkpoint_written(output, before)


def test_patch_size_incompatible_with_the_strides(tiny_digits, weight_files, previous_run):
    """The decoder's own error names the level, its stride and what to choose."""
    output, before = previous_run
    with pytest.raises(ValueError, match=r"level p3 has stride 8, which neither divides nor is a "
                                         r"multiple of the mask patch size 12; choose a "
                                         r"patch_size compatible with all strides"):
        run(MKD_CONFIG, output, f"model.teacher_weights={weight_files / 'teacher.pth'}",
            "model.masker.patch_size=12")
    assert_no_checkpoint_written(output, before)


def test_image_inside_one_patch():
    """One cell: hiding round(ratio) of it hides all of the image or none of it."""
    masker = PatchMasker(patch_size=32, mask_ratio=0.75)
    with pytest.raises(ValueError, match=r"An image of 20x24 pixels fits inside one 32x32 patch: "
                                         r".*Set model\.masker\.patch_size below 24 \(e\.g\. 16"
                                         r".*or train on larger images"):
        masker([(64, 64), (20, 24)], [0, 1], step=0)
    # The suggested patch size works, an image of two cells too, and a ratio of 0 hides nothing.
    grid = PatchMasker(patch_size=16, mask_ratio=0.75)([(20, 24)], [1], step=0).grid
    assert grid.shape == (1, 2, 2) and int(grid.sum()) == 1
    assert masker([(20, 40)], [1], step=0).grid.shape == (1, 1, 2)
    assert PatchMasker(patch_size=32, mask_ratio=0.0)([(20, 24)], [1], step=0).grid.sum() == 1


@pytest.fixture
def coco_dataset(tmp_path):
    """Registers a COCO-format dataset of the given images and annotations; removed after."""
    names = []

    def register(images, annotations):
        name = f"mkd_test_bad_{len(names)}"
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": "digit"}]}))
        register_coco_instances(name, {}, str(path), str(tmp_path))
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


IMAGES = [{"id": i, "file_name": f"{i}.jpg", "height": 64, "width": 64} for i in (1, 2)]


def test_empty_dataset(coco_dataset, previous_run):
    """Detectron2 alone: AssertionError "Dataset '...' is empty!" from inside its loader."""
    name = coco_dataset([], [])
    output, before = previous_run
    with pytest.raises(ValueError, match=rf"dataset '{name}' has no images: json_file \S+ gives "
                                         r"none\. Register it with the annotation file that lists"
                                         r" its images .*or train on another dataset, e\.g\. "
                                         r"dataloader\.train\.dataset\.names=mkd_shapes_train"):
        run(PLAIN_CONFIG, output, f"dataloader.train.dataset.names={name}")
    assert_no_checkpoint_written(output, before)


@pytest.mark.parametrize("crowd", [False, True], ids=["no annotation", "crowd regions only"])
def test_dataset_without_objects(coco_dataset, previous_run, crowd):
    """Detectron2 alone: AssertionError "No valid data found in ...": it drops every image
    without an annotation that is not a crowd region."""
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20],
                    "area": 400, "iscrowd": 1}] if crowd else []
    name = coco_dataset(IMAGES, annotations)
    output, before = previous_run
    with pytest.raises(ValueError, match=rf"dataset '{name}' has 2 images but no object to train "
                                         r"on: none has an instance annotation that is not a "
                                         r"crowd region.*Register the split with its instance "
                                         r"annotations .*or train on another dataset"):
        run(PLAIN_CONFIG, output, f"dataloader.train.dataset.names={name}")
    assert_no_checkpoint_written(output, before)
    # One image with an object is enough (the check is not stricter than Detectron2).
    annotations.append({"id": 2, "image_id": 2, "category_id": 1, "bbox": [4, 4, 20, 20],
                        "area": 400, "iscrowd": 0})
    check_training_data([coco_dataset(IMAGES, annotations)])


def test_builtin_dataset_root_not_writable(tmp_path, previous_run):
    """The built-in data is generated on first use: where it cannot be written, say so first."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    previous = MetadataCatalog.get("mkd_shapes_train").dataset_root
    mkd_bench.datasets.register_builtin(str(blocker / "mkd_shapes"), dataset="shapes")
    output, before = previous_run
    try:
        with pytest.raises(PermissionError, match=r"dataset root \S+mkd_shapes' is not writable"
                                                  r".*set MKD_DATASETS\) to a writable directory"):
            run(REPO / "configs" / "shapes" / "student.py", output)
    finally:
        mkd_bench.datasets.register_builtin(previous, dataset="shapes")
    assert_no_checkpoint_written(output, before)
    assert blocker.read_text() == "not a directory"


def test_unwritable_output_dir(tmp_path):
    """Detectron2 alone: a bare FileExistsError or NotADirectoryError from default_setup."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for output in (blocker, blocker / "output"):
        with pytest.raises(PermissionError, match=rf"train\.output_dir '{output}' is not "
                                                  r"writable \(\w+Error: .*\); set "
                                                  r"train\.output_dir=<a writable directory>"):
            run(PLAIN_CONFIG, output)
    assert read_tree(tmp_path) == {"a_file": b"not a directory"}


@pytest.mark.parametrize("override, suggestion", [
    ("train.max_iters=5", "train.max_iter"),
    ("model.masker.mask_ration=0.3", "model.masker.mask_ratio"),
    ("modle.masker.mask_ratio=0.3", "model.masker.mask_ratio"),
])
def test_unknown_override_key(tmp_path, override, suggestion):
    """Detectron2 alone adds the key, and the run goes on without the change."""
    output = tmp_path / "output"
    key = override.split("=")[0]
    with pytest.raises(KeyError, match=rf"The override '{override}' sets '{key}', "
                                       rf"which \S+retinanet_R18_to_R18_mkd\.py does not have: "
                                       rf"did you mean {suggestion}\? Correct the key"):
        run(MKD_CONFIG, output, override)
    assert not output.exists()  # refused before anything is written


def test_overrides_that_add_known_keys():
    """Keys a config leaves out but that mean something: arguments of a LazyCall target left at
    their defaults, keys read with a default, arguments of a target set just before, and keys
    added on purpose."""
    cfg = LazyConfig.load(str(MKD_CONFIG))
    bottom_up = "model.student.backbone.bottom_up"
    assert OmegaConf.select(cfg, "dataloader.train.dataset.filter_empty") is None
    cfg = apply_known_overrides(cfg, [
        "dataloader.train.dataset.filter_empty=False", "train.seed=3",
        "train.precise_bn.enabled=True", f"{bottom_up}._target_=mkd.modeling.backbone.ScratchResNet",
        f"{bottom_up}.zero_init_residual=False", "+train.my_note=added",
    ], "cfg.py")
    assert cfg.dataloader.train.dataset.filter_empty is False and cfg.train.seed == 3
    assert cfg.model.student.backbone.bottom_up.zero_init_residual is False
    assert cfg.train.my_note == "added"  # hydra's "+": a key added on purpose
    # ResNet itself has no such argument: in the other order, the key is refused.
    with pytest.raises(KeyError, match=r"zero_init_residual', which cfg\.py does not have"):
        apply_known_overrides(LazyConfig.load(str(MKD_CONFIG)), [
            f"{bottom_up}.zero_init_residual=False",
            f"{bottom_up}._target_=mkd.modeling.backbone.ScratchResNet"], "cfg.py")


@pytest.mark.slow
@pytest.mark.parametrize("bad_iter", [3, 0])
def test_non_finite_loss_keeps_the_last_checkpoint(tiny_digits, tmp_path, monkeypatch, bad_iter):
    """loss_box_reg turns NaN at ``bad_iter`` (a test-only wrapper of RetinaNet's forward), with a
    checkpoint every 2 iterations: the run stops there, names the term and the checkpoint, and
    the checkpoint of iteration 1 stays as saved."""
    forward = RetinaNet.forward

    def diverging(self, batched_inputs):
        losses = forward(self, batched_inputs)
        if self.training and get_event_storage().iter == bad_iter:
            losses["loss_box_reg"] = losses["loss_box_reg"] * float("nan")
        return losses

    monkeypatch.setattr(RetinaNet, "forward", diverging)
    checkpoint = tmp_path / "model_0000001.pth"
    kept = (rf"{checkpoint} \(nothing was saved after it\): fix the cause, then continue from "
            r"it with --resume" if bad_iter else r"none yet: fix the cause, then start again")
    with pytest.raises(FloatingPointError, match=rf"Training stopped at iteration {bad_iter}, a "
                                                 rf"loss not finite: loss_box_reg = nan\. Last "
                                                 rf"good checkpoint: {kept}"
                                                 r".*lower optimizer\.lr.*Detectron2 reported: "
                                                 r"Loss became infinite or NaN at iteration"):
        run(PLAIN_CONFIG, tmp_path, "train.max_iter=6", "train.checkpointer.period=2",
            "dataloader.train.total_batch_size=2", "dataloader.evaluator=null",
            "dataloader.train.mapper.augmentations.0.short_edge_length=[64]")
    saved = sorted(p.name for p in tmp_path.glob("*.pth"))
    if not bad_iter:
        assert saved == [] and not (tmp_path / "last_checkpoint").exists()
        return
    assert saved == ["model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())
