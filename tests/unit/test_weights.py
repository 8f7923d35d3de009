"""Verified loading of teacher/student files, on Detectron2 0.6 and main alike.

``load_verified_weights`` goes through the public ``Checkpointer.load`` and reads the incompatible
keys from Detectron2's ``_load_model`` hook; these tests pin that contract on both versions.
"""
import logging
import pickle

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from mkd import MKD, PatchMasker, load_verified_weights
from mkd import weights as weights_module
from mkd.engine import train as train_net
from tests import helpers
from tests.helpers import REPO, mkd_distiller, train_net_setup

MKD_CONFIG = REPO / "configs" / "builtin" / "retinanet_R18_to_R18_mkd.py"


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def source():
    """The model whose weights the files hold."""
    return helpers.build("retinanet", 18, 32, seed=0)


def test_loads_a_pth_saved_by_detectron2(source, tmp_path):
    DetectionCheckpointer(source, str(tmp_path)).save("teacher", iteration=7)  # + "iteration"
    target = helpers.build("retinanet", 18, 32, seed=1)
    load_verified_weights(target, str(tmp_path / "teacher.pth"))
    assert_same_state(target, source)


def test_loads_a_bare_state_dict_pth(source, tmp_path):
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    target = helpers.build("retinanet", 18, 32, seed=1)
    load_verified_weights(target, str(tmp_path / "bare.pth"))
    assert_same_state(target, source)


def test_loads_a_model_zoo_pkl(source, tmp_path):
    """The model zoo's format: numpy arrays under "model", with "__author__"."""
    state = {k: v.numpy() for k, v in source.state_dict().items()}
    with open(tmp_path / "model_final_abc.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)
    target = helpers.build("retinanet", 18, 32, seed=1)
    load_verified_weights(target, str(tmp_path / "model_final_abc.pkl"))
    assert_same_state(target, source)


def test_checkpoint_keys_reads_every_format_as_loading_does(source, tmp_path):
    names = set(source.state_dict())
    DetectionCheckpointer(source, str(tmp_path)).save("detectron2", iteration=7)
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in source.state_dict().items()},
                     "__author__": "Detectron2 Model Zoo"}, f)
    for name in ("detectron2.pth", "bare.pth", "zoo.pkl"):
        keys = weights_module.checkpoint_keys(str(tmp_path / name), "evaluated", "x")
        assert keys == names, name
    (tmp_path / "cut.pth").write_bytes((tmp_path / "bare.pth").read_bytes()[:100])
    with pytest.raises(RuntimeError, match=r"evaluated weights .*cut\.pth could not be read"):
        weights_module.checkpoint_keys(str(tmp_path / "cut.pth"), "evaluated", "x")
    with pytest.raises(FileNotFoundError, match="point x at an existing checkpoint"):
        weights_module.checkpoint_keys(str(tmp_path / "absent.pth"), "evaluated", "x")


def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"point model\.teacher_weights at an existing"):
        load_verified_weights(helpers.build(), str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match=r"set model\.student_weights"):
        load_verified_weights(helpers.build(), "", role="student")


def test_missing_keys_are_counted(source, tmp_path):
    state = source.state_dict()
    dropped = [k for k in state if k.startswith("head.cls_score")]
    torch.save({"model": {k: v for k, v in state.items() if k not in dropped}},
               tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match=rf"{len(dropped)} of {len(state)} parameters/buffers "
                                           r"missing.*Check that the teacher config matches"):
        load_verified_weights(helpers.build(), str(tmp_path / "partial.pth"))
    # Only what ``required_prefix`` covers must be there: a student from an ImageNet backbone.
    bottom_up = [k for k in state if k.startswith("backbone.bottom_up.")]
    torch.save({"model": {k: state[k] for k in bottom_up}}, tmp_path / "backbone.pth")
    target = helpers.build(seed=1)
    load_verified_weights(target, str(tmp_path / "backbone.pth"), "student", "backbone.bottom_up.")
    assert all(torch.equal(target.state_dict()[k], state[k]) for k in bottom_up)


def test_wrong_shapes_are_counted(tmp_path):
    wider = helpers.build("retinanet", 18, 64)
    torch.save({"model": wider.state_dict()}, tmp_path / "wider.pth")
    narrow = helpers.build("retinanet", 18, 32)
    others = [k for k, v in wider.state_dict().items() if v.shape != narrow.state_dict()[k].shape]
    with pytest.raises(RuntimeError, match=rf"weights \S+ do not fit the teacher model: 0 of "
                                           rf"{len(narrow.state_dict())} parameters/buffers "
                                           rf"missing; {len(others)} with mismatched shapes "
                                           r"\(name, file, model\), e\.g\. "
                                           r"\[\('backbone\.fpn_lateral3\.weight', \(64, 128"):
        load_verified_weights(narrow, str(tmp_path / "wider.pth"))
    # Other shapes outside ``required_prefix`` are not required: the bottom-up net loads.
    load_verified_weights(narrow, str(tmp_path / "wider.pth"), "student", "backbone.bottom_up.")
    assert torch.equal(narrow.state_dict()["backbone.bottom_up.stem.conv1.weight"],
                       wider.state_dict()["backbone.bottom_up.stem.conv1.weight"])


def test_a_given_fix_replaces_the_advice(source, tmp_path):
    torch.save({"model": {}}, tmp_path / "empty.pth")
    with pytest.raises(RuntimeError, match="do not fit the MKD model.*Do this instead"):
        load_verified_weights(source, str(tmp_path / "empty.pth"), role="MKD",
                              fix="Do this instead.")


def test_init_student_from_teacher_needs_teacher_weights():
    with pytest.raises(ValueError, match=r"teacher has no weights: set model\.teacher_weights"):
        MKD(student=helpers.build(seed=1), teacher=helpers.build("retinanet", 34),
            distiller=mkd_distiller(), masker=PatchMasker(patch_size=32, mask_ratio=0.5),
            init_student_from_teacher=True)


def test_init_student_from_teacher_warns_when_nothing_matches(tmp_path, caplog):
    teacher = helpers.build("faster_rcnn", 34, 32)
    torch.save({"model": teacher.state_dict()}, tmp_path / "teacher.pth")
    # Detectron2's setup_logger may stop "mkd" from propagating: attach caplog's handler here.
    weights_module.logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=weights_module.logger.name):
            MKD(student=helpers.build("retinanet", 18, 16), teacher=teacher, distiller=mkd_distiller(),
                masker=PatchMasker(patch_size=32, mask_ratio=0.5),
                teacher_weights=str(tmp_path / "teacher.pth"), init_student_from_teacher=True)
    finally:
        weights_module.logger.removeHandler(caplog.handler)
    warnings = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert len(warnings) == 1
    assert "copied nothing" in min(warnings) and "init_student_from_teacher=False" in min(warnings)


def mkd_train_setup(tmp_path, init_checkpoint, teacher):
    """One step at learning rate 0: the student's parameters stay as loaded."""
    return train_net_setup(MKD_CONFIG, tmp_path, [
        f"model.teacher_weights={teacher}", f"train.init_checkpoint={init_checkpoint}",
        "model.distiller.decoder.width=32", "train.max_iter=1", "optimizer.lr=0",
        "dataloader.train.total_batch_size=2", "dataloader.evaluator=null",
    ])


@pytest.fixture(scope="module")
def mkd_files(module_tmp):
    """A teacher .pth, a plain detector .pth of the student and an MKD .pth, all of the config."""
    root = module_tmp("mkd_files")
    model = LazyConfig.load(str(MKD_CONFIG)).model
    torch.manual_seed(0)
    torch.save({"model": instantiate(model.teacher).state_dict()}, root / "teacher.pth")
    torch.save({"model": instantiate(model.student).state_dict()}, root / "plain.pth")
    model.teacher_weights = str(root / "teacher.pth")
    model.distiller.decoder.width = 32
    mkd = instantiate(model)
    torch.save({"model": mkd.state_dict()}, root / "mkd.pth")
    return root, mkd


def test_train_init_checkpoint_of_an_mkd_model_must_hold_the_student(tiny_digits, tmp_path,
                                                                     mkd_files):
    root, _ = mkd_files
    args, cfg = mkd_train_setup(tmp_path, root / "plain.pth", root / "teacher.pth")
    with pytest.raises(RuntimeError, match=r"\d+ of \d+ student\.\* parameters/buffers missing"
                                           r".*goes in model\.student_weights"):
        train_net.do_train(args, cfg)


def test_train_init_checkpoint_of_an_mkd_model_is_loaded(tiny_digits, tmp_path, mkd_files):
    root, saved = mkd_files
    args, cfg = mkd_train_setup(tmp_path, root / "mkd.pth", root / "teacher.pth")
    trainer = train_net.do_train(args, cfg)
    loaded = dict(trainer.model.student.named_parameters())
    for name, value in saved.student.named_parameters():
        assert torch.equal(loaded[name], value), name


def test_a_missing_init_checkpoint_of_a_plain_detector_names_the_commands(tiny_digits, tmp_path):
    """Detectron2 alone would only assert "Checkpoint ... not found!"."""
    args, cfg = train_net_setup(REPO / "configs/builtin/retinanet_R18_scratch.py", tmp_path, [
        f"train.init_checkpoint={tmp_path / 'pretrained.pth'}", "dataloader.evaluator=null"])
    with pytest.raises(FileNotFoundError, match=r"initial weights not found: .*pretrained\.pth.*"
                                                r"tools/pretrain_backbone\.py.*train\.init_checkpoint"):
        train_net.do_train(args, cfg)
    assert not (tmp_path / "last_checkpoint").exists()  # nothing written on the way
