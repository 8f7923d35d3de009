"""Exporting the student of a distillation checkpoint: one call, ``export_student``.

Two files come out: the student's weights (e.g. ``student.pth``) and the student's own
LazyConfig (``student.yaml``, written by Detectron2's ``LazyConfig.save``): ``model`` is the
distillation config's ``model.student``, and ``dataloader``, ``train``, ``optimizer`` and
``lr_multiplier`` are the run's, with ``train.init_checkpoint`` pointing at the weights. The pair
evaluates with Detectron2's own ``tools/lazyconfig_train_net.py --eval-only`` and no code of this
package; the decoder, loss modules, optimizer state and teacher stay behind.
"""
import copy
import os

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.file_io import PathManager
from omegaconf import OmegaConf

from .engine.overrides import apply_known_overrides
from .weights import student_state_dict

#: The sections of the MKD config that the student's config keeps.
KEPT_SECTIONS = ("dataloader", "train", "optimizer", "lr_multiplier")
#: Detectron2's parameter groups, for a run that gave the distiller its own learning rate.
DEFAULT_PARAMS = "detectron2.solver.get_default_optimizer_params"


def config_path(output: str) -> str:
    """Where the student's config goes: beside the weights, ``student.pth`` -> ``student.yaml``."""
    return os.path.splitext(output)[0] + ".yaml"


def student_config(cfg, weights: str):
    """The student's own LazyConfig: ``model`` is ``cfg.model.student`` with its interpolations
    resolved (they may point into the MKD model), and ``train.init_checkpoint`` is ``weights``."""
    student = OmegaConf.create(flags={"allow_objects": True})
    student.model = OmegaConf.create(
        OmegaConf.to_container(cfg.model.student, resolve=True), flags={"allow_objects": True})
    for section in KEPT_SECTIONS:
        if section in cfg:
            student[section] = copy.deepcopy(cfg[section])
    params = OmegaConf.select(student, "optimizer.params", default=None)
    if params is not None and "_target_" in params:
        target = params._target_
        name = target if isinstance(target, str) else f"{target.__module__}.{target.__qualname__}"
        if name.startswith("mkd."):  # mkd.solver.distillation_param_groups: the distiller's LR
            student.optimizer.params = {"_target_": DEFAULT_PARAMS,
                                        "weight_decay_norm": params.get("weight_decay_norm", 0.0)}
    if "train" in student:
        student.train.init_checkpoint = weights
    return student


def check_fits(model, weights: dict, checkpoint: str, config_file: str, what: str) -> None:
    incompatible = model.load_state_dict(weights, strict=False)
    if incompatible.missing_keys or incompatible.unexpected_keys:
        raise RuntimeError(
            f"{checkpoint} does not fit {what} of {config_file}: "
            f"{len(incompatible.missing_keys)} missing keys (e.g. {incompatible.missing_keys[:3]}),"
            f" {len(incompatible.unexpected_keys)} unexpected (e.g. "
            f"{incompatible.unexpected_keys[:3]}). Export with the config the run was trained with."
        )


def export_student(config_file: str, checkpoint: str, output: str, overrides=()) -> dict:
    """Writes ``{"model": student_state_dict}`` to ``output`` and the student's LazyConfig to
    ``config_path(output)``, and returns the former, after checking that the weights fill the
    configured student exactly (zero missing, zero unexpected keys), and that the saved config
    builds a student they fill as well."""
    cfg = apply_known_overrides(LazyConfig.load(config_file), list(overrides), config_file)
    with PathManager.open(checkpoint, "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=False)
    weights = student_state_dict(state.get("model", state))
    check_fits(instantiate(cfg.model.student), weights, checkpoint, config_file,
               "cfg.model.student")

    local = "://" not in output
    target = os.path.abspath(output) if local else output
    exported = {"model": weights}
    if os.path.dirname(output):
        PathManager.mkdirs(os.path.dirname(output))
    with PathManager.open(output, "wb") as f:
        torch.save(exported, f)
    yaml_file = config_path(output)
    LazyConfig.save(student_config(cfg, target), yaml_file)
    if PathManager.exists(yaml_file + ".pkl"):  # LazyConfig.save's fallback: not a yaml config
        raise RuntimeError(
            f"The student's config of {config_file} holds objects YAML cannot write (e.g. a "
            f"lambda), so LazyConfig.save wrote {yaml_file}.pkl instead of a loadable "
            f"{yaml_file}. Replace them in the config by importable functions or classes, then "
            f"export again; the weights in {output} are complete."
        )
    check_fits(instantiate(LazyConfig.load(yaml_file).model), weights, checkpoint, yaml_file,
               "model")
    print(f"Wrote the student ({len(weights)} tensors) to {output} and its config to "
          f"{yaml_file}")
    return exported
