"""Loading teacher/student weights loudly, and cutting the student out of an MKD checkpoint.

Detectron2's checkpointer logs and carries on when a file is missing or keys do not match; for
a teacher that means distilling from random weights (the most common complaint against peer
tools). These helpers use the same checkpointer, then verify.
"""
import logging
import os
from typing import Dict

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from torch import nn

__all__ = [
    "check_weights_file", "checkpoint_keys", "load_verified_weights", "copy_matching_weights",
    "student_state_dict",
]

logger = logging.getLogger(__name__)

STUDENT_PREFIX = "student."


class _RecordingCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer, keeping what it found incompatible instead of only logging it,
    and saying which file could not be read, and why, instead of a bare unpickling error.

    ``_load_file`` (a local file in, the checkpoint dict out) and ``_load_model`` (the checkpoint
    in, the incompatible keys out) are the hooks through which ``Checkpointer.load`` reads and
    loads the weights (fvcore documents ``_load_file`` as the override point for formats, and
    Detectron2 overrides both for the model zoo's); their contracts are the same on Detectron2
    0.6 and main (tests/unit/test_weights.py and tests/integration/test_bad_inputs.py pin them)."""

    incompatible = None

    def __init__(self, model: nn.Module, role: str, path: str, setting: str):
        super().__init__(model)
        self.role, self.path, self.setting = role, path, setting

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except Exception as error:  # any failure to read the file: its text is kept below
            local = ("" if filename == self.path
                     else f" (downloaded as {filename}: delete it to download it again)")
            raise RuntimeError(
                f"{self.role} weights {self.path}{local} could not be read "
                f"({type(error).__name__}: {error}). A truncated file (an interrupted download or "
                "copy) or a file that is not a checkpoint (a Detectron2 .pth or model-zoo .pkl, "
                "or torch.save of a state_dict) fails this way: download or copy it again, or "
                f"point {self.setting} at a complete checkpoint."
            ) from error

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def check_weights_file(path: str, role: str, setting: str) -> None:
    """Raises with the commands that produce the file when ``path`` does not exist (Detectron2's
    checkpointer would only assert "Checkpoint not found")."""
    if not os.path.isfile(PathManager.get_local_path(path)):
        raise FileNotFoundError(
            f"{role} weights not found: {path}. Produce them first: a trained model with "
            "tools/train_net.py and its own config; a backbone pretrained on the built-in data "
            "(output/pretrained/) with tools/pretrain_backbone.py --config-file <the config>. "
            f"Or point {setting} at an existing checkpoint."
        )


class _KeyReader(_RecordingCheckpointer):
    """Reads a checkpoint through ``Checkpointer.load`` and keeps only its tensor names (nothing
    is loaded, so nothing is reported incompatible)."""

    keys: frozenset = frozenset()

    def _load_model(self, checkpoint):
        self.keys = frozenset(checkpoint["model"])
        return None


def checkpoint_keys(path: str, role: str, setting: str) -> frozenset:
    """The names of the tensors a checkpoint holds, read as Detectron2's checkpointer reads it
    for loading (``.pth``, model-zoo ``.pkl``), with the same errors for a missing or unreadable
    file."""
    check_weights_file(path, role, setting)
    reader = _KeyReader(nn.Module(), role, path, setting)
    reader.load(path, checkpointables=[])
    return reader.keys


def load_verified_weights(
    model: nn.Module, path: str, role: str = "teacher", required_prefix: str = "",
    setting: str = "", fix: str = "",
) -> None:
    """Loads a Detectron2 ``.pkl`` (model zoo) or ``.pth`` into ``model``; raises if the file is
    missing, or if any parameter/buffer under ``required_prefix`` is left unloaded or has another
    shape in the file. (A student starting from ImageNet requires only its bottom-up net.)
    ``setting`` names the config key of ``path`` in error messages; ``fix`` replaces the advice
    given when the weights do not fit."""
    setting = setting or f"model.{role}_weights"
    if not path:
        raise ValueError(
            f"No {role} weights configured: set {setting} to a Detectron2 .pkl/.pth "
            f"(e.g. {setting}=/path/to/model_final.pth)."
        )
    check_weights_file(path, role, setting)
    checkpointer = _RecordingCheckpointer(model, role, path, setting)
    checkpointer.load(path, checkpointables=[])
    incompatible = checkpointer.incompatible
    what = f"{required_prefix}* parameters/buffers" if required_prefix else "parameters/buffers"
    expected = len([k for k in model.state_dict() if k.startswith(required_prefix)])
    # (name, shape in the file, shape in the model); fvcore also lists these names as missing.
    shapes = [s for s in incompatible.incorrect_shapes if s[0].startswith(required_prefix)]
    misfit = {s[0] for s in shapes}
    missing = [k for k in incompatible.missing_keys
               if k.startswith(required_prefix) and k not in misfit]
    if missing or shapes:
        details = [f"{len(missing)} of {expected} {what} missing"]
        if missing:
            details.append(f"e.g. {missing[:5]}")
        if shapes:
            details.append(f"{len(shapes)} with mismatched shapes (name, file, model), "
                           f"e.g. {shapes[:3]}")
        fix = fix or (f"Check that the {role} config matches the checkpoint (depth, classes, "
                      f"FPN), or point {setting} at weights of this {role} model.")
        raise RuntimeError(
            f"{role} weights {path} do not fit the {role} model: " + "; ".join(details)
            + f". {fix}"
        )
    unused = incompatible.unexpected_keys + [s[0] for s in incompatible.incorrect_shapes]
    if unused:
        logger.warning(f"{role} weights {path}: {len(unused)} tensors not used by the {role} "
                       f"(unknown names or other shapes), e.g. {unused[:5]}")
    logger.info(f"Loaded all {expected} {role} {what} from {path}")


def copy_matching_weights(source: nn.Module, target: nn.Module, skip_prefix: str) -> int:
    """Copies tensors whose names and shapes match, except those under ``skip_prefix``.
    Returns how many were copied (FGD's ``init_student``: start from the teacher's neck/head)."""
    target_state = target.state_dict()
    copied = {
        k: v for k, v in source.state_dict().items()
        if not k.startswith(skip_prefix) and k in target_state and v.shape == target_state[k].shape
    }
    target.load_state_dict(copied, strict=False)
    if not copied:
        logger.warning(
            f"init_student_from_teacher copied nothing: no teacher tensor outside {skip_prefix}* "
            "matches the student's in name and shape (different families or FPN widths), so the "
            "student keeps its own initialisation. Pair a teacher and student of one family and "
            "FPN width, or set model.init_student_from_teacher=False."
        )
    else:
        logger.info(f"Initialised {len(copied)} student tensors from the teacher (names and "
                    f"shapes matching, {skip_prefix}* excluded)")
    return len(copied)


def student_state_dict(mkd_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The student's own ``state_dict`` from an MKD model's (decoder, losses dropped)."""
    student = {k[len(STUDENT_PREFIX):]: v for k, v in mkd_state.items()
               if k.startswith(STUDENT_PREFIX)}
    if not student:
        raise ValueError(
            "The checkpoint holds no 'student.*' weights: it is not an MKD training checkpoint"
        )
    return student
