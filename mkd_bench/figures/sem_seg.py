"""Semantic segmentation models side by side: a few val images in a grid, one row per image (the
image, its ground truth, then each model's predicted labels), one colour per class on every panel
(the dataset's ``stuff_colors``, else matplotlib's tab10 then Detectron2's colormap without their
greys, background black), the ground truth's ignored label grey, and a legend of the classes.

Label maps are coloured by a palette lookup, not Detectron2's ``Visualizer.draw_sem_seg``: the
Visualizer needs OpenCV, which neither Detectron2 nor this project requires.

    python tools/visualize_sem_seg.py --output predictions.png \\
        --model teacher output/teachers/teacher-<hash> \\
        --model student output/benchmark_distill/shapes_seg/none/seed0-<hash> \\
        --model "student + MKD" configs/shapes_seg/mkd.py output/shapes_seg/mkd/model_final.pth

A model is a run directory of ``tools/train_net.py`` (its ``config.yaml`` and
``model_final.pth``) or a config file and a checkpoint. It is built as ``train_net.py
--eval-only`` builds it: a distilled run (MKD, mimic, MGD) predicts with its student, and the
teacher's weights are not read. ``tools/benchmark_distill.py --task sem_seg`` draws its table's
teacher, student and student + MKD this way.
"""
import argparse
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.utils.colormap import colormap

from mkd.engine.train import build_for_evaluation

IGNORE_COLOR = (128, 128, 128)
BACKGROUND_COLOR = (0, 0, 0)  # of a class named "background": the shapes stand out


def load_run(source: str, checkpoint: Optional[str] = None):
    """(config, checkpoint) of a run directory (``source``, without ``checkpoint``) or of a
    config file and a checkpoint."""
    if checkpoint is None:
        config, checkpoint = (os.path.join(source, f) for f in ("config.yaml", "model_final.pth"))
        if not (os.path.isfile(config) and os.path.isfile(checkpoint)):
            raise FileNotFoundError(
                f"{source} is not a finished run of tools/train_net.py (it needs config.yaml and "
                "model_final.pth): give a run directory, or a config file and a checkpoint")
        source = config
    return LazyConfig.load(source), checkpoint


@torch.no_grad()
def predict(cfg, checkpoint: str, records: Sequence[Dict]) -> List[np.ndarray]:
    """The label map (H x W, the record's size) ``cfg``'s model with ``checkpoint`` predicts
    for each dataset record, through the config's test mapper (``cfg`` is changed: it names the
    checkpoint as train_net.py --eval-only's)."""
    cfg.train.init_checkpoint = checkpoint
    model = build_for_evaluation(cfg).eval()
    mapper = instantiate(cfg.dataloader.test.mapper)
    return [model([mapper(r)])[0]["sem_seg"].argmax(dim=0).cpu().numpy() for r in records]


def read_labels(record: Dict) -> np.ndarray:
    return utils.read_image(record["sem_seg_file_name"], format="L").squeeze(2)


def palette(dataset: str) -> Dict[str, tuple]:
    """Class name -> RGB colour, in label order: the dataset's ``stuff_colors``, else tab10's
    distinct hues, then Detectron2's colormap for more classes, without greys (they would read
    as the ignored label)."""
    from matplotlib import colormaps

    meta = MetadataCatalog.get(dataset)
    classes = list(meta.stuff_classes)
    colors = meta.get("stuff_colors")
    if not colors:
        candidates = np.concatenate([np.array(colormaps["tab10"].colors) * 255,
                                     colormap(rgb=True)]).round().astype(int)
        vivid = [c for c in candidates if np.ptp(c) > 30]
        colors = [BACKGROUND_COLOR if name == "background" else tuple(c)
                  for name, c in zip(classes, vivid)]
    return {name: tuple(int(v) for v in c) for name, c in zip(classes, colors)}


def colorize(labels: np.ndarray, colors: Sequence[tuple]) -> np.ndarray:
    """The RGB image of a label map: label k in ``colors[k]``, any other label (ignored) grey."""
    table = np.array(list(colors) + [IGNORE_COLOR], dtype=np.uint8)
    return table[np.where(labels < len(colors), labels, len(colors))]


def figure(models: Dict[str, tuple], output: str, num_images: int = 4,
           dataset: Optional[str] = None) -> Dict[str, List[np.ndarray]]:
    """Draws the grid of the first ``num_images`` images of ``dataset`` (default: the first
    model's test set) to ``output``; ``models``: column title -> (config, checkpoint). Returns
    the label maps of each column, "ground truth" first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    first_cfg = next(iter(models.values()))[0]
    dataset = dataset or first_cfg.dataloader.test.dataset.names
    records = DatasetCatalog.get(dataset)[:num_images]
    if not records:
        raise ValueError(f"{dataset} has no images to draw")
    columns = {"ground truth": [read_labels(r) for r in records]}
    for title, (cfg, checkpoint) in models.items():
        columns[title] = predict(cfg, checkpoint, records)
    colors = palette(dataset)
    fig, axes = plt.subplots(len(records), len(columns) + 1, squeeze=False, dpi=100,
                             figsize=(2.2 * (len(columns) + 1), 2.2 * len(records) + 0.8),
                             constrained_layout=True)
    for index, (row, record) in enumerate(zip(axes, records)):
        panels = [utils.read_image(record["file_name"], format="RGB")]
        panels += [colorize(labels[index], list(colors.values())) for labels in columns.values()]
        for ax, panel in zip(row, panels):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"image {record.get('image_id', '')}", fontsize=9)
    for ax, title in zip(axes[0], ["image", *columns]):
        ax.set_title(title, fontsize=9)
    legend = [Patch(color=np.array(c) / 255, label=name)
              for name, c in [*colors.items(), ("ignored", IGNORE_COLOR)]]
    fig.legend(handles=legend, loc="outside lower center", ncol=min(len(legend), 6),
               fontsize=8, frameon=False)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    print(f"Wrote {output}")
    return columns


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", action="append", required=True,
                        metavar="LABEL RUN_DIR | LABEL CONFIG CHECKPOINT",
                        help="a column: its title and a run directory, or its title, a config "
                             "file and a checkpoint (repeat for each model, in column order)")
    parser.add_argument("--images", type=int, default=4, help="the first N images of the set")
    parser.add_argument("--dataset", default=None,
                        help="a registered dataset (default: the first model's test set)")
    parser.add_argument("--output", default="predictions.png")
    args = parser.parse_args(argv)
    for values in args.model:
        if len(values) not in (2, 3):
            parser.error(f"--model {' '.join(values)}: give LABEL RUN_DIR or LABEL CONFIG "
                         "CHECKPOINT")
    return args


def main(argv=None) -> Dict[str, List[np.ndarray]]:
    args = parse_args(argv)
    models = {label: load_run(*source) for label, *source in args.model}
    return figure(models, args.output, args.images, args.dataset)

