"""Semantic segmentation with MKD: Detectron2's semantic FPN (SemanticSegmentor) as teacher and
student, a RetinaNet teacher for a segmentation student, masked segmentation students, export;
the built-in shapes labels and their registration; the shapes, Cityscapes and ADE20K configs."""
import contextlib
import json
import math
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.datasets import builtin as d2_builtin
from detectron2.evaluation import SemSegEvaluator
from detectron2.modeling import SemanticSegmentor
from detectron2.utils.events import EventStorage
from PIL import Image
from scipy import ndimage

from mkd import MKD
from mkd.engine import train as train_net
from mkd.engine.datasets import check_datasets_available
from mkd.modeling.distillers import MGDDistiller, MimicDistiller
from mkd_bench.datasets import semantic, shapes, split_paths
from tests import helpers
from tests.helpers import REPO, check_step_and_eval, train_net_setup, wrap_mkd

SEMANTIC_FPN = str(REPO / "configs/common/models/semantic_fpn.py")
NUM_CLASSES = 9  # the shapes' 8 classes and background
IGNORE = 255


def semantic_fpn(depth: int = 18, seed: int = 0) -> SemanticSegmentor:
    """A tiny semantic FPN from the project's config: BN (trainable from scratch), 32 wide."""
    model = LazyConfig.load(SEMANTIC_FPN).model
    bottom_up = model.backbone.bottom_up
    bottom_up.stem.norm = bottom_up.stages.norm = "BN"
    bottom_up.stages.depth = depth
    if depth < 50:
        del bottom_up.stages.stride_in_1x1  # BasicBlock takes none
    model.backbone.out_channels = 32
    model.sem_seg_head.update(conv_dims=32, num_classes=NUM_CLASSES)
    torch.manual_seed(seed)
    return instantiate(model)


def seg_batch(sizes=((64, 96), (96, 64)), seed: int = 0):
    """Training inputs: random images whose labels hold a rectangle of a class, background
    elsewhere, and an ignored band at the rectangle's top."""
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for i, (h, w) in enumerate(sizes):
        label = torch.zeros(h, w, dtype=torch.long)
        label[h // 4: 3 * h // 4, w // 3: w - 4] = 1 + i
        label[h // 4: h // 4 + 2] = IGNORE
        inputs.append({"image": torch.randint(0, 256, (3, h, w), generator=g).float(),
                       "sem_seg": label, "image_id": 100 + i, "height": h, "width": w})
    return inputs


@pytest.mark.parametrize("teacher_depth", [18, 50], ids=["R18", "R50"])  # Basic, Bottleneck
def test_semantic_fpn_teacher_and_student(tmp_path, teacher_depth):
    teacher, student = semantic_fpn(teacher_depth, seed=0), semantic_fpn(18, seed=1)
    model = wrap_mkd(tmp_path, teacher, student)
    assert model.levels == ["p2", "p3", "p4", "p5", "p6"]
    losses = check_step_and_eval(model, seg_batch())
    assert set(losses) == {"loss_sem_seg", "loss_mkd_feat", "loss_mkd_global"}
    model.eval()
    with torch.no_grad():
        outputs = model(seg_batch())
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(NUM_CLASSES, 64, 96),
                                                            (NUM_CLASSES, 96, 64)]


def test_retinanet_teacher_for_a_segmentation_student(tmp_path):
    """A detector teacher: the FPN levels both have (P3-P6) are distilled."""
    teacher = helpers.build("retinanet", depth=34, seed=0)
    model = wrap_mkd(tmp_path, teacher, semantic_fpn(18, seed=1))
    assert model.levels == ["p3", "p4", "p5", "p6"]
    check_step_and_eval(model, seg_batch())


@pytest.mark.parametrize("distiller", [MimicDistiller(weight=1.0),
                                       MGDDistiller(alpha=2e-5, mask_ratio=0.75)],
                         ids=["mimic", "mgd"])
def test_unmasked_distillers_train_a_segmentation_student(tmp_path, distiller):
    path = tmp_path / "teacher.pth"
    teacher = semantic_fpn(50, seed=0)
    torch.save({"model": teacher.state_dict()}, path)
    model = MKD(student=semantic_fpn(18, seed=1), teacher=teacher, teacher_weights=str(path),
                distiller=distiller).train()
    with EventStorage(0):
        losses = model(seg_batch())
    assert "loss_sem_seg" in losses and len(losses) >= 2
    assert all(math.isfinite(float(v)) and float(v) > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    assert model.student.backbone.bottom_up.res5[-1].conv2.weight.grad.abs().sum() > 0


def test_masked_segmentation_student_ignores_hidden_pixels(tmp_path):
    """The student's masked features (every FPN level, so every input of the segmentation head)
    and its logits from them do not depend on what hidden pixels hold; without the mask they
    do. The distillation gradient reaches the masked student."""
    model = wrap_mkd(tmp_path, semantic_fpn(50, seed=0), semantic_fpn(18, seed=1)).eval()
    inputs = seg_batch(sizes=((96, 128), (96, 128)))
    student = model.student
    images = torch.stack([(x["image"] - student.pixel_mean) / student.pixel_std for x in inputs])
    mask = model.masker([tuple(images.shape[-2:])] * 2, [0, 1], step=0)
    hidden = 1 - mask.at(*images.shape[-2:], 1)
    assert 0 < float(hidden.mean()) < 1
    changed = images + 5 * torch.randn_like(images) * hidden
    with torch.no_grad():
        clean, scrambled = (model.masked_student_features(x, mask) for x in (images, changed))
        assert clean.keys() == {"p2", "p3", "p4", "p5", "p6"}
        for level, feature in clean.items():
            assert torch.equal(feature, scrambled[level]), level
        head = student.sem_seg_head
        assert torch.equal(head.layers(clean), head.layers(scrambled))
        plain = student.backbone(images)["p3"], student.backbone(changed)["p3"]
        assert not torch.allclose(*plain)

    model.train()
    with EventStorage(0):
        losses = model(seg_batch())
    losses["loss_mkd_feat"].backward()
    assert student.backbone.bottom_up.res5[-1].conv2.weight.grad.abs().sum() > 0
    assert student.sem_seg_head.predictor.weight.grad is None  # the head is not distilled


# -- the built-in shapes dataset's per-pixel labels ------------------------------------------
def _polygon_mask(annotation, height, width):
    rles = mask_util.frPyObjects(annotation["segmentation"], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _grow(mask, pixels=1):
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3)), iterations=pixels)


def test_labels_match_the_polygons(shapes_root):
    json_file, _ = split_paths(shapes_root, "val")
    with open(json_file, "rb") as f:
        detection_json = f.read()
    semantic.ensure_labels(shapes_root, "val")
    with open(json_file, "rb") as f:
        assert f.read() == detection_json  # the detection split is left as generated
    coco = json.loads(detection_json)
    assert coco["annotations"]
    for image in coco["images"]:
        labels = np.asarray(Image.open(semantic.label_file(shapes_root, "val", image["file_name"])))
        assert labels.shape == (image["height"], image["width"])
        assert set(np.unique(labels)) <= {*range(NUM_CLASSES), IGNORE}
        shapes_here = np.zeros(labels.shape, dtype=bool)
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            inside = _polygon_mask(ann, *labels.shape)
            interior, band = ~_grow(~inside), _grow(inside) & _grow(~inside)
            assert interior.any()
            assert (labels[interior] == ann["category_id"]).all()
            assert (labels[band] == IGNORE).all()
            shapes_here |= inside
        assert (labels[~_grow(shapes_here)] == 0).all()
        assert (labels == 0).mean() > 0.3 and (labels == IGNORE).mean() < 0.3


def test_labels_are_rewritten_only_when_stale(shapes_root):
    semantic.ensure_labels(shapes_root, "train")
    stamp = os.path.join(semantic.labels_dir(shapes_root, "train"), "labels_version.json")
    written = os.path.getmtime(stamp)
    semantic.ensure_labels(shapes_root, "train")
    assert os.path.getmtime(stamp) == written
    with open(stamp) as f:
        old = dict(json.load(f), version=semantic.LABELS_VERSION - 1)
    with open(stamp, "w") as f:
        json.dump(old, f)
    semantic.ensure_labels(shapes_root, "train")
    with open(stamp) as f:
        assert json.load(f)["version"] == semantic.LABELS_VERSION


def test_registration_and_mapper(shapes_root):
    dicts = DatasetCatalog.get("mkd_shapes_sem_seg_val")
    assert len(dicts) == 3
    assert all(os.path.isfile(d["sem_seg_file_name"]) and os.path.isfile(d["file_name"])
               for d in dicts)
    meta = MetadataCatalog.get("mkd_shapes_sem_seg_val")
    assert meta.stuff_classes == ["background", *shapes.CATEGORY_NAMES]
    assert (meta.ignore_label, meta.evaluator_type) == (IGNORE, "sem_seg")
    mapped = DatasetMapper(is_train=True, augmentations=[], image_format="BGR")(dicts[0])
    assert mapped["sem_seg"].shape == mapped["image"].shape[1:] == (128, 128)
    check_datasets_available(["mkd_shapes_sem_seg_train", "mkd_shapes_sem_seg_val"])


def test_sem_seg_evaluator_returns_miou(shapes_root):
    dicts = DatasetCatalog.get("mkd_shapes_sem_seg_val")
    scores = {}
    for prediction in ("ground truth", "background"):
        evaluator = SemSegEvaluator("mkd_shapes_sem_seg_val", distributed=False)
        evaluator.reset()
        for d in dicts:
            labels = torch.as_tensor(np.asarray(Image.open(d["sem_seg_file_name"])),
                                     dtype=torch.long)
            labels = labels.masked_fill(labels == IGNORE, 0)
            if prediction == "background":
                labels = torch.zeros_like(labels)
            logits = torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(2, 0, 1).float()
            evaluator.process([d], [{"sem_seg": logits}])
        scores[prediction] = evaluator.evaluate()["sem_seg"]
    assert scores["ground truth"]["mIoU"] == pytest.approx(100.0)
    assert 0 < scores["background"]["mIoU"] < 50  # background's IoU, every shape class 0
    assert scores["background"]["IoU-background"] > 50


# -- configs --------------------------------------------------------------------------------
SHAPES_SEG = REPO / "configs" / "shapes_seg"
#: What makes the configs' models and loaders tiny; every other field is the config's own.
SMALL_LOADERS = ["dataloader.train.total_batch_size=2"]


def _teacher_weights(cfg, path):
    """Weights for the config's teacher (random, from seed 0), written to ``path``."""
    torch.manual_seed(0)
    torch.save({"model": instantiate(cfg.model.teacher).state_dict()}, path)
    return f"model.teacher_weights={path}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["teacher", "student", "mkd", "mimic", "mgd"])
def test_shapes_seg_config_trains_and_evaluates_miou(shapes_root, tmp_path, name):
    """Two iterations, evaluation by SemSegEvaluator at the end, then --eval-only."""
    config = SHAPES_SEG / f"{name}.py"
    overrides = list(SMALL_LOADERS)
    if name in ("mkd", "mimic", "mgd"):
        overrides.append(_teacher_weights(LazyConfig.load(str(config)), tmp_path / "t.pth"))
        overrides.append("model.student_weights=null")  # not the pretrained bottom-up's link
    else:
        overrides.append("train.init_checkpoint=")
    args, cfg = train_net_setup(config, tmp_path, overrides + ["train.max_iter=2"])
    assert instantiate(cfg.dataloader.evaluator)._num_classes == NUM_CLASSES
    train_net.do_train(args, cfg)
    args, cfg = train_net_setup(config, tmp_path, overrides + [
        f"train.init_checkpoint={tmp_path / 'model_final.pth'}"], eval_only=True)
    results = train_net.main(args)
    assert 0 <= results["sem_seg"]["mIoU"] <= 100


def test_export_gives_the_plain_semantic_segmentor(tmp_path):
    config = str(SHAPES_SEG / "mkd.py")
    small = ["model.distiller.decoder.width=32", "model.distiller.decoder.num_heads=4",
             "model.teacher_weights=null", "model.student_weights=null"]
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), small)
    model = instantiate(cfg.model)
    torch.save({"model": model.teacher.state_dict()}, tmp_path / "teacher.pth")
    model.load_teacher(str(tmp_path / "teacher.pth"))
    model.train()
    with EventStorage(0):
        sum(model(seg_batch()).values()).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()  # the student differs from its init
    DetectionCheckpointer(model, str(tmp_path)).save("mkd")

    helpers.run_tool("export_student", [
        "--config-file", config, "--checkpoint", str(tmp_path / "mkd.pth"),
        "--output", str(tmp_path / "student.pth"), *small])

    plain = instantiate(cfg.model.student)  # plain Detectron2, no MKD code
    assert isinstance(plain, SemanticSegmentor)
    exported = torch.load(tmp_path / "student.pth", map_location="cpu")["model"]
    assert exported.keys() == plain.state_dict().keys()
    DetectionCheckpointer(plain).load(str(tmp_path / "student.pth"))
    model.eval(), plain.eval()
    with torch.no_grad():
        for ours, theirs in zip(model(seg_batch()), plain(seg_batch())):
            torch.testing.assert_close(ours["sem_seg"], theirs["sem_seg"], rtol=0, atol=0)


# -- Cityscapes and ADE20K on Detectron2's registrations, in their real layouts -------------
REAL = {  # dataset: (config directory, names, Detectron2's registration, classes)
    "cityscapes": ("cityscapes", [f"cityscapes_fine_{task}_{split}"
                                  for task in ("instance_seg", "sem_seg")
                                  for split in ("train", "val", "test")],
                   d2_builtin.register_all_cityscapes, 19),
    "ade20k": ("ade20k", ["ade20k_sem_seg_train", "ade20k_sem_seg_val"],
               d2_builtin.register_all_ade20k, 150),
}


@contextlib.contextmanager
def registered_at(dataset, root):
    """Detectron2's names of ``dataset`` registered under ``root``, then back where they were
    (Detectron2 registers them under $DETECTRON2_DATASETS when imported)."""
    _, names, register, _ = REAL[dataset]

    def register_under(where):
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register(where)

    register_under(str(root))
    try:
        yield
    finally:
        register_under(os.getenv("DETECTRON2_DATASETS", "datasets"))


def write_layout(dataset, root, num_classes, images_per_split=2, size=(64, 128)):
    """A few random images and labels where Detectron2 (and its preparation scripts) put them."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(images_per_split):
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            labels = rng.integers(0, num_classes, (size[0] // 16, size[1] // 16), dtype=np.uint8)
            labels = labels.repeat(16, 0).repeat(16, 1)
            labels[:2] = IGNORE
            if dataset == "cityscapes":
                images = root / "cityscapes" / "leftImg8bit" / split / "aachen"
                gt = root / "cityscapes" / "gtFine" / split / "aachen"
                stem = f"aachen_{i:06d}_000019_"
                gt.mkdir(parents=True, exist_ok=True)
                for kind in ("labelTrainIds", "labelIds", "instanceIds"):
                    Image.fromarray(labels).save(gt / f"{stem}gtFine_{kind}.png")
                (gt / f"{stem}gtFine_polygons.json").write_text(json.dumps(
                    {"imgHeight": size[0], "imgWidth": size[1], "objects": []}))
                image_file = images / f"{stem}leftImg8bit.png"
            else:
                folder = {"train": "training", "val": "validation"}[split]
                base = root / "ADEChallengeData2016"
                gt, images = base / "annotations_detectron2" / folder, base / "images" / folder
                gt.mkdir(parents=True, exist_ok=True)
                Image.fromarray(labels).save(gt / f"ADE_{split}_{i:08d}.png")
                image_file = images / f"ADE_{split}_{i:08d}.jpg"
            images.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(image_file)


@pytest.mark.parametrize("dataset", list(REAL))
def test_missing_real_data_names_its_layout(tmp_path, dataset):
    expected = {"cityscapes": ["cityscapes/{leftImg8bit,gtFine}", "labelTrainIds",
                               "createTrainIdLabelImgs.py"],
                "ade20k": ["ADEChallengeData2016/{images,annotations_detectron2}",
                           "prepare_ade20k_sem_seg.py"]}[dataset]
    with registered_at(dataset, tmp_path):
        with pytest.raises(FileNotFoundError) as error:
            check_datasets_available([REAL[dataset][1][-1]])
    for text in expected:
        assert text in str(error.value)
    with registered_at(dataset, tmp_path):
        write_layout(dataset, tmp_path, REAL[dataset][3], images_per_split=1)
        check_datasets_available([n for n in REAL[dataset][1] if "instance" not in n
                                  and "test" not in n])


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(REAL))
def test_real_data_mkd_config_trains_then_evaluates(tmp_path, dataset):
    """The MKD config on a tiny copy of the dataset in its real layout: two iterations (with the
    evaluation at the end), then --eval-only of the result. Only sizes and the device change."""
    directory, _, _, num_classes = REAL[dataset]
    config = REPO / "configs" / directory / "semantic_R101_to_R18_mkd.py"
    write_layout(dataset, tmp_path / "data", num_classes)
    overrides = ["train.device=cpu", "model.student_weights=null", "train.max_iter=2",
                 "dataloader.train.total_batch_size=2",
                 _teacher_weights(LazyConfig.load(str(config)), tmp_path / "teacher.pth")]

    def tiny_images(cfg):
        resize, crop, _ = cfg.dataloader.train.mapper.augmentations
        resize.update(short_edge_length=[64, 80], max_size=256)
        crop.crop_size = (64, 64)
        cfg.dataloader.test.mapper.augmentations[0].update(short_edge_length=64, max_size=256)
        return cfg

    with registered_at(dataset, tmp_path / "data"):
        args, cfg = train_net_setup(config, tmp_path / "run", overrides)
        assert cfg.model.student.sem_seg_head.num_classes == num_classes
        train_net.do_train(args, tiny_images(cfg))
        args, cfg = train_net_setup(config, tmp_path / "run", overrides + [
            f"train.init_checkpoint={tmp_path / 'run' / 'model_final.pth'}"], eval_only=True)
        cfg = tiny_images(cfg)
        results = train_net.do_test(cfg, train_net.build_for_evaluation(cfg))
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
