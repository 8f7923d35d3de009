#!/usr/bin/env python
"""Cuts the student out of an MKD training checkpoint.

The output loads into plain Detectron2 (``instantiate(cfg.model.student)`` + ``DetectionCheckpointer``)
with no MKD code: the decoder, loss modules, optimizer state and teacher stay behind.

    python tools/export_student.py --config-file configs/builtin/retinanet_R50_to_R18_mkd.py \
        --checkpoint output/.../model_final.pth --output student.pth
"""
import argparse

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.file_io import PathManager

from mkd.weights import student_state_dict


def export_student(config_file: str, checkpoint: str, output: str, overrides=()) -> dict:
    """Writes ``{"model": student_state_dict}`` and returns it, after checking that it fills the
    configured student exactly (zero missing, zero unexpected keys)."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(overrides))
    with PathManager.open(checkpoint, "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=False)
    weights = student_state_dict(state.get("model", state))
    student = instantiate(cfg.model.student)
    incompatible = student.load_state_dict(weights, strict=False)
    if incompatible.missing_keys or incompatible.unexpected_keys:
        raise RuntimeError(
            f"{checkpoint} does not fit cfg.model.student of {config_file}: "
            f"{len(incompatible.missing_keys)} missing keys (e.g. {incompatible.missing_keys[:3]}),"
            f" {len(incompatible.unexpected_keys)} unexpected (e.g. "
            f"{incompatible.unexpected_keys[:3]}). Export with the config the run was trained with."
        )
    exported = {"model": weights}
    with PathManager.open(output, "wb") as f:
        torch.save(exported, f)
    print(f"Wrote the student ({len(weights)} tensors) to {output}")
    return exported


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the MKD config of the run")
    parser.add_argument("--checkpoint", required=True, help="an MKD training checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="where to write the student (.pth)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides path.key=value")
    args = parser.parse_args(argv)
    export_student(args.config_file, args.checkpoint, args.output, args.opts)


if __name__ == "__main__":
    main()
