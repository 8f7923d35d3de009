"""What MKD's decoder learned: the teacher's features next to the masked student's reconstruction.

For each chosen image, one PNG with a row per distilled FPN level and five panels per row:

1. the student's masked input (hidden patches black), in RGB;
2. the teacher's feature energy ``mean_c z^2``, where ``z`` is the feature after the distiller's
   normalisation (``model.distiller.feature_loss.normalize``, per-channel standardisation by
   default): the quantity the feature loss compares, per position;
3. the same energy of the decoder's reconstruction before training (``--initial-checkpoint``, or
   the model ``instantiate(cfg.model)`` builds after ``torch.manual_seed(--seed)``);
4. the same after training (``--checkpoint``); panels 2-4 of a row share one colour scale;
5. the reconstruction error after training, ``mean_c (z_T - z_S)^2``; its title also gives the
   mean error before training.

Panels 3-5 outline the hidden patches (the maps are drawn in image pixels, so they line up).

One mask (``model.masker`` with seed ``--seed``, step 0) serves both models, so before and after
differ by their weights only. The models are in eval mode (BN with running statistics), except
the masked pass, which runs as training ran it (``masked_student_features_as_trained``: BN on
batch statistics, which are what the decoder learned from); the reconstruction is the
distiller's own (``MKDDistiller.reconstruct``).

    python tools/visualize_mkd.py --config-file configs/builtin/retinanet_R50_to_R18_mkd.py \\
        --checkpoint output/retinanet_R50_to_R18_mkd/model_final.pth --images 2

Config overrides (``path.key=value``) come last; after ``--image-ids``, separate them by ``--``.
"""
import argparse
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

from mkd import FeatureDistillation, MKDDistiller, load_verified_weights, normalize_features
from mkd.modeling.meta_arch import image_key


@dataclass
class LevelPanels:
    """The maps of one FPN level, each (H_i, W_i) like the level's features."""

    level: str
    stride: int
    teacher: np.ndarray  # energy of the teacher's normalised features
    before: np.ndarray  # energy of the normalised reconstruction before training
    after: np.ndarray  # ... after training
    error: np.ndarray  # per-position MSE between normalised teacher and reconstruction (after)
    error_before: float  # the mean of the same error before training


@dataclass
class ImagePanels:
    """Everything ``draw_panels`` shows for one image, as arrays tests can check."""

    image_id: object
    masked_input: np.ndarray  # (H, W, 3) RGB in [0, 1], hidden patches 0
    mask_grid: np.ndarray  # (Gh, Gw) bool, True = hidden; cell (i, j) starts at pixel (i*s, j*s)
    patch_size: int
    normalize: str
    levels: List[LevelPanels]


def check_mkd_config(cfg, config_file: str) -> None:
    """Only MKD's distiller reconstructs the teacher's features: the other distillers (mimic,
    FGD, MGD) have no decoder to visualise."""
    target = OmegaConf.select(cfg, "model.distiller._target_", default=None)
    if isinstance(target, str):
        target = locate(target)
    if not (isinstance(target, type) and issubclass(target, MKDDistiller)):
        name = getattr(target, "__name__", target)
        raise ValueError(
            f"{config_file}: model.distiller is {name}, not an MKDDistiller; only MKD's decoder "
            "reconstructs the teacher's features, so there is nothing to visualise"
        )


def build_model(cfg, checkpoint: Optional[str], seed: int, setting: str = "--checkpoint"):
    """``cfg.model`` in eval mode; seeded so that without ``checkpoint`` it is reproducible,
    with ``checkpoint`` loaded and verified: student and decoder, since the decoder is what we
    show (a checkpoint without it would silently leave it random)."""
    torch.manual_seed(seed)
    model = instantiate(cfg.model)
    if checkpoint:
        load_verified_weights(model, checkpoint, role="visualized", setting=setting)
    return model.eval()


def load_inputs(cfg, dataset: Optional[str] = None, num_images: int = 2,
                image_ids: Optional[Sequence[str]] = None) -> List[Dict]:
    """Images of the test set (or ``dataset``) through the config's test mapper, as the
    student sees them at evaluation: chosen by id, else the first ``num_images``."""
    names = dataset or cfg.dataloader.test.dataset.names
    names = [names] if isinstance(names, str) else list(names)
    dicts = [d for name in names for d in DatasetCatalog.get(name)]
    if image_ids:
        by_id = {str(d["image_id"]): d for d in dicts}
        unknown = [i for i in image_ids if i not in by_id]
        if unknown:
            raise ValueError(f"image ids {unknown} are not in {names} (ids there: e.g. "
                             f"{list(by_id)[:5]})")
        dicts = [by_id[i] for i in image_ids]
    else:
        dicts = dicts[:num_images]
    if not dicts:
        raise ValueError(f"no images to show in {names}")
    mapper = instantiate(cfg.dataloader.test.mapper)
    return [mapper(d) for d in dicts]


def _energy(x: torch.Tensor) -> np.ndarray:
    return x.pow(2).mean(dim=1)[0].numpy()


@torch.no_grad()
def compute_panels(before: FeatureDistillation, after: FeatureDistillation,
                   batched_input: Dict) -> ImagePanels:
    """The panels of one image (a test mapper's output). ``after`` provides the teacher and the
    mask (``after.masker`` at step 0); both models share the preprocessing of one config."""
    image = batched_input["image"]
    height, width = image.shape[-2:]
    mask = after.masker([(height, width)], [image_key(batched_input, 0)], step=0)
    masked = (image.float() * mask.at(height, width, 1)[0]).permute(1, 2, 0).numpy() / 255.0
    # Detectron2's loaders read BGR unless told otherwise (FCOS declares no input_format).
    if getattr(after.student, "input_format", "BGR") == "BGR":
        masked = masked[:, :, ::-1]
    images = after.student.preprocess_image([batched_input])
    teacher = after.teacher_features([batched_input], images.tensor)
    mode = after.distiller.feature_loss.normalize
    reconstructed = {}
    for name, model in (("before", before), ("after", after)):
        features = model.masked_student_features_as_trained(images.tensor, mask)
        decoded = model.distiller.reconstruct({k: features[k] for k in model.levels}, mask)
        reconstructed[name] = {k: normalize_features(v, mode) for k, v in decoded.items()}
    strides = after.student.backbone.output_shape()
    levels = []
    for level in after.levels:
        t = normalize_features(teacher[level], mode)
        s_before, s_after = reconstructed["before"][level], reconstructed["after"][level]
        levels.append(LevelPanels(
            level=level, stride=strides[level].stride, teacher=_energy(t),
            before=_energy(s_before), after=_energy(s_after), error=_energy(t - s_after),
            error_before=float((t - s_before).pow(2).mean()),
        ))
    return ImagePanels(
        image_id=batched_input.get("image_id"), masked_input=np.ascontiguousarray(masked),
        mask_grid=mask.grid[0].numpy() == 0, patch_size=mask.patch_size, normalize=mode,
        levels=levels,
    )


def _hidden_outline(mask_grid: np.ndarray, patch_size: int) -> List[List[tuple]]:
    """Pixel-space segments around the hidden region (not around each of its cells, which
    would hide its shape behind the grid lines)."""
    hidden = np.pad(mask_grid, 1)  # cells outside the grid count as visible
    s, segments = patch_size, []
    for i, j in zip(*np.nonzero(mask_grid)):
        y, x = i * s, j * s
        if not hidden[i, j + 1]:
            segments.append([(x, y), (x + s, y)])
        if not hidden[i + 2, j + 1]:
            segments.append([(x, y + s), (x + s, y + s)])
        if not hidden[i + 1, j]:
            segments.append([(x, y), (x, y + s)])
        if not hidden[i + 1, j + 2]:
            segments.append([(x + s, y), (x + s, y + s)])
    return segments


def draw_panels(panels: ImagePanels, path: str, title: str = "") -> None:
    """One row per level; every panel in image pixels, so that levels and patches line up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    height, width = panels.masked_input.shape[:2]
    rows = len(panels.levels)
    fig, axes = plt.subplots(rows, 5, figsize=(13, 2.5 * rows + 0.8), dpi=100, squeeze=False,
                             constrained_layout=True)
    z = "z" if panels.normalize == "none" else f"z = {panels.normalize}-normalised feature"
    fig.suptitle(f"{title}\nimage {panels.image_id}: energy = mean over channels of z², {z}; "
                 "error = mean over channels of (z_teacher − z_reconstruction)²; "
                 "cyan: outline of the hidden patches", fontsize=10)
    outline = _hidden_outline(panels.mask_grid, panels.patch_size)
    for row, lv in zip(axes, panels.levels):
        extent = (0, lv.teacher.shape[1] * lv.stride, lv.teacher.shape[0] * lv.stride, 0)
        row[0].imshow(panels.masked_input, extent=(0, width, height, 0), interpolation="nearest")
        vmax = max(lv.teacher.max(), lv.before.max(), lv.after.max())
        for ax, data, name in zip(row[1:4], (lv.teacher, lv.before, lv.after),
                                  ("teacher energy", "reconstruction energy, before",
                                   "reconstruction energy, after")):
            energy = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax, extent=extent,
                               interpolation="nearest")
            ax.set_title(name, fontsize=9)
        error = row[4].imshow(lv.error, cmap="magma", vmin=0, extent=extent,
                              interpolation="nearest")
        row[4].set_title(f"error after: {lv.error.mean():.3f} (before {lv.error_before:.3f})",
                         fontsize=9)
        for ax in row[2:]:
            ax.add_collection(LineCollection(outline, colors="cyan", linewidths=1.2))
        row[0].set_title("masked student input", fontsize=9)
        row[0].set_ylabel(f"{lv.level} (stride {lv.stride}, {lv.teacher.shape[0]}×"
                          f"{lv.teacher.shape[1]})", fontsize=10)
        for ax in row:
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(energy, ax=list(row[1:4]), shrink=0.85, pad=0.01)
        fig.colorbar(error, ax=row[4], shrink=0.85, pad=0.01)
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the MKD config of the run")
    parser.add_argument("--checkpoint", required=True, help="the trained MKD checkpoint (.pth)")
    parser.add_argument("--initial-checkpoint", default=None,
                        help="the model before training (default: a fresh, seeded cfg.model)")
    parser.add_argument("--teacher-weights", default=None,
                        help="the teacher's weights (default: model.teacher_weights)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--images", type=int, default=2, help="the first N images of the set")
    which.add_argument("--image-ids", nargs="+", default=None, help="images by image_id")
    parser.add_argument("--dataset", default=None,
                        help="a registered dataset (default: cfg.dataloader.test.dataset.names)")
    parser.add_argument("--output-dir", default=None,
                        help="where the PNGs go (default: the checkpoint's directory)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the mask's seed, and the initial model's when not loaded")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides path.key=value")
    args = parser.parse_args(argv)
    if args.image_ids and any("=" in i for i in args.image_ids):
        parser.error("put '--' between --image-ids and the config overrides")
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    return args


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    check_mkd_config(cfg, args.config_file)
    cfg.model.teacher_weights = args.teacher_weights or cfg.model.teacher_weights
    if not cfg.model.teacher_weights:
        raise ValueError("the teacher has no weights: give --teacher-weights or set "
                         "model.teacher_weights; a random teacher's features mean nothing")
    cfg.model.masker.seed = args.seed
    before = build_model(cfg, args.initial_checkpoint, args.seed, "--initial-checkpoint")
    after = build_model(cfg, args.checkpoint, args.seed)
    inputs = load_inputs(cfg, args.dataset, args.images, args.image_ids)
    out = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                          "mkd_visualization")
    os.makedirs(out, exist_ok=True)
    title = (f"{os.path.basename(args.config_file)}: before = "
             f"{args.initial_checkpoint or f'fresh model, seed {args.seed}'}, after = "
             f"{args.checkpoint}; mask seed {args.seed}, ratio {after.masker.mask_ratio}")
    paths = []
    for batched_input in inputs:
        panels = compute_panels(before, after, batched_input)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(panels.image_id))
        path = os.path.join(out, f"mkd_{name}.png")
        draw_panels(panels, path, title)
        print(f"Wrote {path}")
        paths.append(path)
    return paths

