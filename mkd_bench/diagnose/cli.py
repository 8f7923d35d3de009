#!/usr/bin/env python
"""Why a distilled student scores what it scores: measurements on trained runs, not guesses.

Given finished runs (``tools/benchmark_distill.py``'s ``<method>/seed<S>-<hash>/`` directories,
or any ``tools/train_net.py`` output directory: ``config.yaml``, ``model_final.pth``,
``metrics.json``), it writes ``report.md`` and PNGs into ``--output-dir`` and prints the tables:

1. **Loss curves per term** (``metrics.json``): every ``loss_*`` term of every run against the
   iteration, the task loss of every run on one axis (does distillation lower it or fight it?)
   and each distilled run's distillation-to-task ratio. Task terms are the ones the run's student
   returns by itself (one training-mode forward); the others are the distiller's.
2. **Reconstruction error per level** on ``--images`` test images, each MKD run's own masker
   drawing step 0 at ``--seed``; the clean student in eval mode, the masked pass as training
   ran it (BN on the image's batch statistics, as ``masked_norm_statistics`` says; eval mode
   would feed the decoder features normalised with running statistics, which it never saw):
   the normalised MSE ``mean (z_T - z)^2``, ``z`` the features after the feature loss's own
   normalisation (the loss is half this, on all positions),
   of the decoder's output at hidden and visible positions, and of the decoder fed the previous
   image's masked student (``another image's student``: near its own error, the decoder
   reconstructs the teacher without reading the student); of every run's clean student features
   channel for channel (``raw``: meaningful only where the distiller ties channels, e.g. FGD/MGD
   without an adapter) and through the best 1x1 linear map (``linear readout``: least squares on
   the even-numbered images, scored on the odd ones; whether the teacher can be read from the
   student's own features, whatever their channel order); of the distiller's learnt adapter
   (mimic's). Both sides are normalised, so under per-channel standardisation the error is
   ``2 - 2 r`` (``r``: a channel's spatial correlation with the teacher's, averaged): 2 means
   uncorrelated. The baseline predicts the teacher's per-channel mean: exactly 1.0 there.
3. **Per-level weighting** of each MKD and mimic run, in training mode on one batch of the
   same images (BN with batch statistics; every weight and running statistic restored
   afterwards): each level's term of the feature and global losses (the losses' own per-level
   terms, weighted as in training), its positions, and the gradient norm it alone sends into
   the student's bottom-up network, as a share of the levels' sum; next to the task loss's
   gradient (clean pass) and the cosine between the task and distillation gradients. Mimic
   scores its adapter on the clean student with the same feature loss: the control for MKD's
   decoder.

    python tools/diagnose_mkd.py --runs output/benchmark_distill/shapes/mkd/seed0-* \\
        output/benchmark_distill/shapes/mimic/seed0-* \\
        output/benchmark_distill/shapes/none/seed0-* --images 32 --output-dir output/diagnose

A plain detector's run (the "none" row) is compared with the teacher of the first distilled run.
"""
import argparse
import contextlib
import copy
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import LazyConfig
from detectron2.utils.events import EventStorage
from detectron2.utils.registry import locate
from omegaconf import OmegaConf
from torch import nn

from mkd import FeatureDistillation, MKDDistiller, normalize_features
from mkd.modeling.meta_arch import image_key
from mkd_bench import distill_benchmark as benchmark_distill
from mkd_bench import runs
from mkd_bench.figures import reconstructions as visualize_mkd

BASELINE = "teacher mean (baseline)"
DECODER = ("decoder, all", "decoder, hidden", "decoder, visible")
OTHER_STUDENT = "decoder, another image's student"
RAW = "student, raw"
READOUT = "student, linear readout"
ADAPTER = "student, own adapter"
ERROR_COLUMNS = [BASELINE, *DECODER, OTHER_STUDENT, RAW, READOUT, ADAPTER]
WEIGHED = ("mkd", "mimic")  # the methods whose per-level weighting section 3 measures
WEIGHTING_COLUMNS = [
    "level", "positions/image", "feature term", "feature share", "global term", "global share",
    "feature grad", "feature grad share", "global grad", "global grad share",
]


@dataclass
class RunRecord:
    """A finished run and what was measured on it."""

    name: str
    method: str  # "none", or the distiller's kind: "mkd", "mimic", "fgd", "mgd"
    cfg: object
    checkpoint: str
    directory: str = ""  # where metrics.json lies ("": none)
    task_terms: List[str] = field(default_factory=list)
    task_losses: Dict[str, float] = field(default_factory=dict)  # on the diagnosed images
    errors: List[Dict] = field(default_factory=list)  # section 2, a row per level
    weighting: List[Dict] = field(default_factory=list)  # section 3 (WEIGHED), a row per level
    gradients: Dict[str, float] = field(default_factory=dict)  # section 3's totals

    @property
    def metrics(self) -> List[Dict]:
        return runs.read_metrics(self.directory) if self.directory else []

    def final_score(self) -> Optional[float]:
        """The last evaluation's box AP (mIoU for segmentation), None without one."""
        if not self.directory:
            return None
        for task, names in runs.TASK_METRICS.items():
            evaluations = runs.Run(self.name, "", self.directory, task=task).evaluations()
            if evaluations:
                return evaluations[-1][names[0]]
        return None


def method_of(cfg) -> str:
    """``none`` for a plain detector; else the distiller's class name without ``Distiller``."""
    target = _located(OmegaConf.select(cfg, "model._target_", default=None))
    if not (isinstance(target, type) and issubclass(target, FeatureDistillation)):
        return "none"
    distiller = _located(cfg.model.distiller._target_)
    return distiller.__name__.replace("Distiller", "").lower()


def _located(target):
    return locate(target) if isinstance(target, str) else target


def load_run(directory: str) -> RunRecord:
    """A run directory of tools/train_net.py: its resolved config and final weights."""
    config, checkpoint = (os.path.join(directory, f) for f in ("config.yaml", "model_final.pth"))
    missing = [p for p in (config, checkpoint) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a finished run: {', '.join(missing)} missing. Give the "
            "directory of a run tools/train_net.py finished (it writes config.yaml and "
            "model_final.pth), or --config-file and --checkpoint"
        )
    cfg = LazyConfig.load(config)
    method = method_of(cfg)
    return RunRecord(f"{method}: {os.path.basename(os.path.normpath(directory))}", method, cfg,
                     checkpoint, directory)


def distillation_weights(run: RunRecord) -> str:
    """The run's loss weights, as tools/benchmark_distill.py scales them."""
    keys = benchmark_distill.LOSS_WEIGHTS.get(run.method, [])
    return ", ".join(f"{k.rsplit('.', 1)[-1]} {OmegaConf.select(run.cfg, k):g}" for k in keys)


def build_model(run: RunRecord, seed: int, teacher_weights: Optional[str], device: str):
    """The run's model, eval mode, its checkpoint loaded and verified; an MKD model with its
    teacher (weights verified) and its masker pinned to ``seed``. The student's initial weights
    are not read: the checkpoint replaces them."""
    cfg = copy.deepcopy(run.cfg)
    if run.method != "none":
        cfg.model.student_weights = None
        cfg.model.init_student_from_teacher = False
        cfg.model.teacher_weights = teacher_weights or cfg.model.teacher_weights
        if cfg.model.get("masker") is not None:
            cfg.model.masker.seed = seed
    return visualize_mkd.build_model(cfg, run.checkpoint, seed, "--runs or --checkpoint").to(device)


def student_of(model):
    return model.student if isinstance(model, FeatureDistillation) else model


@contextlib.contextmanager
def training_mode(model):
    """Training mode (BN on batch statistics) for a measurement; every parameter and buffer
    (BN running statistics) is restored afterwards, and the model is back in eval mode."""
    state = copy.deepcopy(model.state_dict())
    model.train()
    try:
        yield model
    finally:
        model.load_state_dict(state)
        model.eval()


def task_losses(model, inputs) -> Dict[str, float]:
    """The student's own training losses on ``inputs`` (which carry ground truth): the task
    terms, whatever the family (RetinaNet, R-CNN, semantic FPN)."""
    with training_mode(model), torch.no_grad(), EventStorage():  # where RetinaNet logs
        return {k: float(v) for k, v in student_of(model)(inputs).items()}


# -- section 2: reconstruction error per level ----------------------------------------------
def squared_error_map(prediction: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    """(N, H, W): ``mean_c (z_target - z_prediction)^2`` after the feature loss's
    normalisation ``mode``; the feature loss is half its mean over positions."""
    difference = normalize_features(prediction.float(), mode) - normalize_features(
        target.float(), mode)
    return difference.pow(2).mean(dim=1)


def weighted_mean(maps: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> float:
    """``sum(map * weight) / sum(weight)`` over images (NaN where every weight is 0, e.g. the
    hidden positions at mask ratio 0)."""
    total = sum(float((m * w).sum()) for m, w in zip(maps, weights))
    count = sum(float(w.sum()) for w in weights)
    return total / count if count else math.nan


def linear_readout_error(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
                         mode: str, ridge: float = 1e-2) -> float:
    """How well a 1x1 linear map (with bias) of the student's normalised features predicts the
    teacher's, on images it was not fitted on: ridge least squares on the even-numbered images
    (``ridge`` times the number of fitted positions on the diagonal, i.e. relative to a
    standardised feature's energy), the normalised MSE on the odd-numbered ones. Invariant to
    the order and scale of the student's channels, which no loss fixed unless it tied them."""
    if len(students) < 2:
        raise ValueError("the linear readout needs at least 2 images (it is fitted on half of "
                         "them and scored on the other half): give --images 2 or more")

    def rows(x):  # (1, C, H, W) -> (H*W, C + 1), normalised, with a bias column
        x = normalize_features(x.double(), mode)[0].flatten(1).T
        return torch.cat([x, x.new_ones(len(x), 1)], dim=1)

    x_fit = torch.cat([rows(s) for s in students[0::2]])
    y_fit = torch.cat([normalize_features(t.double(), mode)[0].flatten(1).T
                       for t in teachers[0::2]])
    regulariser = ridge * len(x_fit) * torch.eye(x_fit.shape[1], dtype=x_fit.dtype)
    weights = torch.linalg.solve(x_fit.T @ x_fit + regulariser, x_fit.T @ y_fit)
    maps = []
    for s, t in zip(students[1::2], teachers[1::2]):
        prediction = (rows(s) @ weights).T.reshape(1, t.shape[1], *t.shape[-2:])
        maps.append(squared_error_map(prediction, t, mode))
    return weighted_mean(maps, [torch.ones_like(m) for m in maps])


@torch.no_grad()
def teacher_maps(model: FeatureDistillation, inputs: Sequence[Dict]) -> List[Dict[str, torch.Tensor]]:
    """Per image, the teacher's features at the distilled levels (on the CPU)."""
    maps = []
    for x in inputs:
        images = model.student.preprocess_image([x]).tensor
        maps.append({k: v.cpu() for k, v in model.teacher_features([x], images).items()})
    return maps


@torch.no_grad()
def reconstruction_errors(model, inputs: Sequence[Dict], teacher: Sequence[Dict],
                          levels: Sequence[str], mode: str, ridge: float = 1e-2) -> List[Dict]:
    """Section 2 for one run: a row per level, ``ERROR_COLUMNS`` that apply to the run, each
    image on its own (no padding inside a map's statistics). ``teacher``: ``teacher_maps``."""
    student = student_of(model)
    strides = student.backbone.output_shape()
    distiller = getattr(model, "distiller", None)
    decodes = isinstance(distiller, MKDDistiller)
    align = getattr(distiller, "align", None)  # mimic's, FGD's and MGD's 1x1 adapters
    adapts = isinstance(align, nn.ModuleDict) and any(
        not isinstance(m, nn.Identity) for m in align.values())
    maps = {column: {k: ([], []) for k in levels} for column in ERROR_COLUMNS}
    clean_features = {k: [] for k in levels}
    decoder_inputs = []  # per image: its masked student features and mask
    for x, t in zip(inputs, teacher):
        images = student.preprocess_image([x]).tensor
        clean = {k: v.cpu() for k, v in student.backbone(images).items() if k in levels}
        for k in levels:
            if clean[k].shape[-2:] != t[k].shape[-2:]:
                raise ValueError(
                    f"image {x.get('image_id')}, level {k}: the student's map is "
                    f"{tuple(clean[k].shape[-2:])}, the teacher's {tuple(t[k].shape[-2:])}: the "
                    "runs preprocess images differently; diagnose runs of one pair together")
            clean_features[k].append(clean[k])
        predictions = {BASELINE: {k: t[k].mean(dim=(2, 3), keepdim=True).expand_as(t[k])
                                  for k in levels}}
        if adapts:
            predictions[ADAPTER] = {k: v.cpu() for k, v in distiller.aligned(
                {k: clean[k].to(model.device) for k in levels}).items()}
        if all(clean[k].shape[1] == t[k].shape[1] for k in levels):
            predictions[RAW] = clean
        for column, predicted in predictions.items():
            for k in levels:
                error = squared_error_map(predicted[k], t[k], mode)
                maps[column][k][0].append(error)
                maps[column][k][1].append(torch.ones_like(error))
        if decodes:
            height, width = x["image"].shape[-2:]
            mask = model.masker([(height, width)], [image_key(x, 0)], step=0, device=model.device)
            masked = model.masked_student_features_as_trained(images, mask)
            decoder_inputs.append(({k: masked[k] for k in model.levels}, mask))
            decoded = distiller.decoder(*decoder_inputs[-1])
            for k in levels:
                error = squared_error_map(decoded[k].cpu(), t[k], mode)
                visible = mask.at(*error.shape[-2:], strides[k].stride)[:, 0].cpu()
                for column, weight in zip(DECODER, (torch.ones_like(error), 1 - visible,
                                                    visible)):
                    maps[column][k][0].append(error)
                    maps[column][k][1].append(weight)
    # Each image's teacher against the decoder fed the previous image's student (the first's:
    # the last's), where the two have one size.
    for i, t in enumerate(teacher if len(decoder_inputs) > 1 else []):
        features, mask = decoder_inputs[i - 1]
        if any(features[k].shape[-2:] != t[k].shape[-2:] for k in levels):
            continue
        decoded = distiller.decoder(features, mask)
        for k in levels:
            error = squared_error_map(decoded[k].cpu(), t[k], mode)
            maps[OTHER_STUDENT][k][0].append(error)
            maps[OTHER_STUDENT][k][1].append(torch.ones_like(error))
    rows = []
    for k in levels:
        row = {"level": k, "positions/image": "×".join(map(str, teacher[0][k].shape[-2:]))}
        row.update({column: weighted_mean(*maps[column][k]) for column in ERROR_COLUMNS
                    if maps[column][k][0]})
        row[READOUT] = linear_readout_error(clean_features[k], [t[k] for t in teacher], mode,
                                            ridge)
        rows.append(row)
    return rows


# -- section 3: per-level weighting ---------------------------------------------------------
def gradient(loss: torch.Tensor, parameters: Sequence[torch.Tensor]) -> torch.Tensor:
    """d loss / d parameters, flattened into one vector (zeros where a parameter is unused)."""
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, parameters)])


def shares(values: Sequence[float]) -> List[float]:
    total = sum(values)
    return [v / total if total else math.nan for v in values]


@dataclass
class Scored:
    """What a run's distiller scores against the teacher, per level, and how it weighs it."""

    predicted: Dict[str, torch.Tensor]
    hidden: Optional[Dict[str, torch.Tensor]]  # per level, where the loss counts hidden only
    feature_weight: float
    global_loss: Optional[nn.Module] = None
    global_weight: float = 0.0


def scored_prediction(model: FeatureDistillation, images: torch.Tensor, inputs: Sequence[Dict]) -> Scored:
    """MKD's decoder on the masked student; mimic's adapter on the clean student (no mask, no
    global loss). Both score with ``FeatureLoss``, so their gradient shares tell the decoder's
    part in the weighting of the levels from the loss's own."""
    distiller = model.distiller
    if not isinstance(distiller, MKDDistiller):
        clean = model.student.backbone(images)
        return Scored(distiller.aligned({k: clean[k] for k in model.levels}), None,
                      distiller.weight)
    sizes = [tuple(x["image"].shape[-2:]) for x in inputs]
    mask = model.masker(sizes, [image_key(x, i) for i, x in enumerate(inputs)], step=0,
                        device=model.device)
    masked = model.masked_student_features(images, mask)
    predicted = distiller.decoder({k: masked[k] for k in model.levels}, mask)
    hidden = None
    if distiller.feature_loss.positions == "hidden":
        strides = model.student.backbone.output_shape()
        hidden = {k: 1 - mask.at(*v.shape[-2:], strides[k].stride) for k, v in predicted.items()}
    return Scored(predicted, hidden, distiller.feature_weight, distiller.global_loss,
                  distiller.global_weight)


def level_weighting(model: FeatureDistillation, inputs: Sequence[Dict]):
    """Section 3 for one MKD or mimic run (``WEIGHED``), on ``inputs`` as one batch (training
    mode, restored after): a row per level (``WEIGHTING_COLUMNS``), and the totals: the summed
    per-level terms against the losses computed over all levels at once (they must agree), and
    the gradient norms of the task loss (clean pass) and of the whole distillation loss, with
    their cosine."""
    distiller = model.distiller
    with training_mode(model), EventStorage():
        student = model.student
        images = student.preprocess_image(inputs).tensor
        teacher = model.teacher_features(inputs, images)
        parameters = [p for p in student.backbone.bottom_up.parameters() if p.requires_grad]
        task = sum(student(inputs).values())
        scored = scored_prediction(model, images, inputs)
        decoded, weight, global_loss = scored.predicted, scored.feature_weight, scored.global_loss
        feature_terms, global_terms = [], []
        for k in model.levels:
            hidden = {k: scored.hidden[k]} if scored.hidden is not None else None
            feature_terms.append(weight * distiller.feature_loss(
                {k: decoded[k]}, {k: teacher[k]}, hidden))
            if global_loss is not None:
                global_terms.append(scored.global_weight * global_loss(
                    {k: decoded[k]}, {k: teacher[k]}))
        feature_grads = [float(gradient(term, parameters).norm()) for term in feature_terms]
        global_grads = [float(gradient(term, parameters).norm()) for term in global_terms]
        task_grad = gradient(task, parameters)
        distill_grad = gradient(sum(feature_terms) + sum(global_terms), parameters)
        whole_feature = float(weight * distiller.feature_loss(decoded, teacher, scored.hidden))
        whole_global = (float(scored.global_weight * global_loss(decoded, teacher))
                        if global_loss is not None else math.nan)
    feature_values = [float(t) for t in feature_terms]
    global_values = [float(t) for t in global_terms] or [math.nan] * len(model.levels)
    nan_shares = [math.nan] * len(model.levels)
    columns = zip(model.levels, feature_values, shares(feature_values), global_values,
                  shares(global_values) if global_terms else nan_shares, feature_grads,
                  shares(feature_grads), global_grads or nan_shares,
                  shares(global_grads) if global_grads else nan_shares)
    rows = [dict(zip(WEIGHTING_COLUMNS, (k, "×".join(map(str, teacher[k].shape[-2:])), *values)))
            for k, *values in columns]
    cosine = float(torch.nn.functional.cosine_similarity(task_grad, distill_grad, dim=0))
    totals = {
        "feature loss, sum of level terms": sum(feature_values),
        "feature loss, all levels at once": whole_feature,
        "global loss, sum of level terms": sum(global_values),
        "global loss, all levels at once": whole_global,
        "task loss (clean pass)": float(task),
        "task grad norm": float(task_grad.norm()),
        "distillation grad norm": float(distill_grad.norm()),
        "distillation / task grad norm": float(distill_grad.norm() / task_grad.norm()),
        "cosine(task grad, distillation grad)": cosine,
    }
    return rows, totals


# -- section 1: loss curves -----------------------------------------------------------------
def loss_rows(run: RunRecord) -> List[Dict]:
    """The training rows of metrics.json, with ``trained`` iterations, the task loss, the
    distillation loss and their ratio (Detectron2 logs each term's median over its window)."""
    rows = []
    for m in run.metrics:
        if "total_loss" not in m:
            continue
        terms = {k: v for k, v in m.items() if k.startswith("loss_")}
        task = sum(v for k, v in terms.items() if k in run.task_terms)
        distill = sum(v for k, v in terms.items() if k not in run.task_terms)
        rows.append({"iteration": m["iteration"] + 1, **terms, "task": task,
                     "distillation": distill,
                     "ratio": distill / task if run.method != "none" and task else math.nan})
    return rows


def plot_losses(records: Sequence[RunRecord], directory: str) -> List[str]:
    """``loss_curves.png``: a panel per run with every term; ``task_loss.png``: the task loss of
    every run, and every distilled run's distillation-to-task ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_rows = [(r, loss_rows(r)) for r in records]
    with_rows = [(r, rows) for r, rows in with_rows if rows]
    if not with_rows:
        return []
    columns = min(3, len(with_rows))
    count = math.ceil(len(with_rows) / columns)
    fig, axes = plt.subplots(count, columns, figsize=(5 * columns, 3.6 * count), dpi=110,
                             squeeze=False)
    for ax, (run, rows) in zip(axes.flat, with_rows):
        iterations = [r["iteration"] for r in rows]
        for term in sorted({k for r in rows for k in r if k.startswith("loss_")}):
            ax.plot(iterations, [r.get(term, math.nan) for r in rows], marker=".", label=term,
                    linestyle="-" if term in run.task_terms else "--")
        ax.set_yscale("log")
        ax.set_title(run.name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(with_rows):]:
        ax.axis("off")
    fig.suptitle("every loss term (solid: task, dashed: distillation; window medians)")
    fig.tight_layout()
    curves = os.path.join(directory, "loss_curves.png")
    fig.savefig(curves)
    plt.close(fig)

    fig, (task_ax, ratio_ax) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for run, rows in with_rows:
        iterations = [r["iteration"] for r in rows]
        task_ax.plot(iterations, [r["task"] for r in rows], marker=".", label=run.name)
        if run.method != "none":
            ratio_ax.plot(iterations, [r["ratio"] for r in rows], marker=".", label=run.name)
    task_ax.set_title("task loss (" + " + ".join(with_rows[0][0].task_terms) + ")", fontsize=9)
    ratio_ax.set_title("distillation loss / task loss", fontsize=9)
    for ax in (task_ax, ratio_ax):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    task = os.path.join(directory, "task_loss.png")
    fig.savefig(task)
    plt.close(fig)
    return [curves, task]


def plot_errors(records: Sequence[RunRecord], path: str) -> None:
    """A panel per run: its errors per level, the baseline as a line at each level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(records))
    count = math.ceil(len(records) / columns)
    fig, axes = plt.subplots(count, columns, figsize=(5 * columns, 3.8 * count), dpi=110,
                             squeeze=False)
    for ax in list(axes.flat)[len(records):]:
        ax.axis("off")
    for ax, run in zip(axes.flat, records):
        levels = [r["level"] for r in run.errors]
        shown = [c for c in ERROR_COLUMNS[1:] if c in run.errors[0]]
        width = 0.8 / len(shown)
        for i, column in enumerate(shown):
            ax.bar([j + i * width for j in range(len(levels))],
                   [r[column] for r in run.errors], width, label=column)
        ax.plot([j + 0.4 - width / 2 for j in range(len(levels))],
                [r[BASELINE] for r in run.errors], "k_", markersize=25, label=BASELINE)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(levels))])
        ax.set_xticklabels(levels)
        ax.set_title(run.name, fontsize=9)
        ax.set_ylabel("normalised MSE to the teacher")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_weighting(records: Sequence[RunRecord], path: str) -> None:
    """A panel per MKD or mimic run: per level, its share of positions, of the feature loss and
    of the gradient the feature and global terms send into the bottom-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(5 * len(records), 3.8), dpi=110,
                             squeeze=False)
    for ax, run in zip(axes[0], records):
        levels = [r["level"] for r in run.weighting]
        positions = [math.prod(map(int, r["positions/image"].split("×"))) for r in run.weighting]
        bars = {"positions": shares(positions)}
        bars.update({c: [r[c] for r in run.weighting] for c in
                     ("feature share", "feature grad share", "global grad share")})
        for i, (name, values) in enumerate(bars.items()):
            ax.bar([j + i * 0.2 for j in range(len(levels))], values, 0.2, label=name)
        ax.set_xticks([j + 0.3 for j in range(len(levels))])
        ax.set_xticklabels(levels)
        ax.set_ylabel("share of the sum over levels")
        ax.set_title(run.name, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- the report -----------------------------------------------------------------------------
def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3g}" if abs(value) >= 1e3 or (
            value and abs(value) < 1e-3) else f"{value:.3f}"
    return "" if value is None else str(value)


def table(rows: Sequence[Dict], columns: Sequence[str]) -> str:
    """Markdown, three decimals (three significant digits for very small or large values)."""
    return runs.format_table([{c: _cell(r.get(c)) for c in columns} for r in rows], columns)


def loss_summary(records: Sequence[RunRecord]) -> List[Dict]:
    """A row per run: the first and last logged task and distillation losses and ratio, the
    last task loss against the undistilled run's, and the task loss on the diagnosed images."""
    none = next((loss_rows(r) for r in records if r.method == "none" and loss_rows(r)), [])
    summary = []
    for run in records:
        rows = loss_rows(run)
        row = {"run": run.name, "weights": distillation_weights(run) or "-",
               "AP": run.final_score(),
               "task loss on diagnosed images": sum(run.task_losses.values())}
        if rows:
            first, last = rows[0], rows[-1]
            row.update({"first iteration": first["iteration"], "last iteration": last["iteration"],
                        "task first": first["task"], "task last": last["task"],
                        "task last / none's": last["task"] / none[-1]["task"] if none else None,
                        "distillation first": first["distillation"] if run.method != "none"
                        else None,
                        "distillation last": last["distillation"] if run.method != "none"
                        else None,
                        "ratio first": first["ratio"], "ratio last": last["ratio"]})
        summary.append(row)
    return summary


LOSS_SUMMARY_COLUMNS = ["run", "weights", "AP", "first iteration", "last iteration", "task first",
                        "task last", "task last / none's", "distillation first",
                        "distillation last", "ratio first", "ratio last",
                        "task loss on diagnosed images"]


def task_loss_table(records: Sequence[RunRecord]):
    """The task loss of every run at every logged iteration (blank where a run did not log)."""
    by_run = {r.name: {row["iteration"]: row["task"] for row in loss_rows(r)} for r in records}
    iterations = sorted({i for rows in by_run.values() for i in rows})
    rows = [{"iteration": i, **{name: rows.get(i) for name, rows in by_run.items()}}
            for i in iterations]
    return rows, ["iteration", *by_run]


def findings(records: Sequence[RunRecord]) -> List[str]:
    """Facts read off the tables (no interpretation): which level carries the gradient, which
    levels give the feature loss nothing, how the decoder and readouts compare with the
    baseline and with the undistilled student."""
    lines = []
    none = next((r for r in records if r.method == "none"), None)
    for run in records:
        if run.weighting:
            top = max(run.weighting, key=lambda r: r["feature grad share"])
            silent = [r["level"] for r in run.weighting if not r["feature term"] > 1e-9]
            grads = run.gradients
            lines.append(
                f"{run.name}: {top['level']} sends {100 * top['feature grad share']:.0f}% of the "
                "feature loss's gradient into the bottom-up (levels' sum); "
                + (f"levels with no feature-loss signal: {', '.join(silent)}; " if silent else "")
                + f"distillation/task gradient norm {grads['distillation / task grad norm']:.2f}, "
                f"cosine {grads['cosine(task grad, distillation grad)']:+.2f}")
        if DECODER[1] in (run.errors[0] if run.errors else {}):
            lines.append(f"{run.name}: decoder error at hidden / visible positions per level: "
                         + ", ".join(f"{r['level']} {_cell(r[DECODER[1]])} / "
                                     f"{_cell(r[DECODER[2]])} (baseline {_cell(r[BASELINE])})"
                                     for r in run.errors))
        if none is not None and run is not none and run.errors and none.errors:
            lines.append(f"{run.name}: linear readout of the teacher, this run vs none, per "
                         "level: " + ", ".join(
                             f"{r['level']} {_cell(r[READOUT])} vs {_cell(n[READOUT])}"
                             for r, n in zip(run.errors, none.errors)))
    return lines


def write_report(records: Sequence[RunRecord], args, mode: str, figures: Dict[str, List[str]]):
    """report.md in ``args.output_dir``; returns its text."""
    teachers = sorted({str(OmegaConf.select(r.cfg, "model.teacher_weights"))
                       for r in records if r.method != "none"})
    parts = ["# MKD diagnosis", "",
             f"Runs: {len(records)}; {args.images} images of the test set; masks of step 0 at "
             f"seed {args.seed}; normalisation `{mode}`; teacher weights: "
             + ", ".join(f"`{t}`" for t in teachers)
             + (" (the runs do not share one teacher: compare with care)" if len(teachers) > 1
                else ""), ""]
    for run in records:
        parts.append(f"- **{run.name}** ({run.method}): `{run.checkpoint}`"
                     + (f", weights {distillation_weights(run)}" if run.method != "none" else ""))
    parts += ["", "## 1. Loss curves per term", "",
              "Task terms are what each student returns by itself ("
              + ", ".join(sorted({t for r in records for t in r.task_terms})) + "); the rest "
              "distil. Values are Detectron2's window medians from metrics.json; the last column "
              "is the task loss on the diagnosed images with the final weights (training mode).",
              "", table(loss_summary(records), LOSS_SUMMARY_COLUMNS), "",
              "Task loss per logged iteration:", "", table(*task_loss_table(records)), ""]
    for run in records:
        rows = loss_rows(run)
        if rows and run.method != "none":
            terms = sorted({k for r in rows for k in r if k.startswith("loss_")})
            parts += [f"{run.name}, every term:", "",
                      table(rows, ["iteration", *terms, "task", "distillation", "ratio"]), ""]
    parts += [f"![{p}]({os.path.basename(p)})" for p in figures["losses"]]
    parts += ["", "## 2. Reconstruction error per level", "",
              "Normalised MSE `mean (z_teacher - z)^2`, `z` after the feature loss's "
              f"normalisation (`{mode}`); the feature loss is half of it. Both sides are "
              "normalised, so under per-channel standardisation it is 2 − 2r, r the mean "
              "spatial correlation of a channel with the teacher's: 2 is uncorrelated, 0 exact. "
              "Baseline: the teacher's per-channel mean (1.0 under per-channel standardisation, "
              "reached only by an exactly constant map; 0 where a map is 1×1, which "
              "standardisation empties). Decoder: the MKD run's reconstruction from its "
              "masked student (BN on batch statistics, as in training), at all / hidden / "
              "visible positions. Raw: the clean student's own features, channel for channel. "
              "Linear readout: the best 1×1 map from the clean student's features, fitted on "
              "half the images, scored on the "
              f"other half (ridge {args.ridge:g}; where the fitted positions, half the images "
              "× positions/image, are fewer than the student's channels, the ridge dominates "
              "the fit: compare runs at one level rather than with the baseline). Own "
              "adapter: the distiller's learnt 1×1 adapter (mimic's; FGD's and MGD's where "
              "channels differ).", ""]
    for run in records:
        columns = ["level", "positions/image"] + [c for c in ERROR_COLUMNS if c in run.errors[0]]
        parts += [f"{run.name}:", "", table(run.errors, columns), ""]
    parts += [f"![{p}]({os.path.basename(p)})" for p in figures["errors"]]
    parts += ["", "## 3. Per-level weighting (MKD and mimic runs)", "",
              "One batch of the diagnosed images in training mode (BN on batch statistics, "
              "restored after). Terms: each level's term of the loss as weighted in training; "
              "grad: the norm of the gradient that level's term alone sends into the student's "
              "bottom-up network; shares are of the sum over levels.", ""]
    for run in records:
        if run.weighting:
            parts += [f"{run.name}:", "", table(run.weighting, WEIGHTING_COLUMNS), "",
                      table([{"quantity": k, "value": v} for k, v in run.gradients.items()],
                            ["quantity", "value"]), ""]
    parts += [f"![{p}]({os.path.basename(p)})" for p in figures["weighting"]]
    parts += ["", "## Findings (read off the tables)", ""]
    parts += [f"- {line}" for line in findings(records)]
    text = "\n".join(parts) + "\n"
    with open(os.path.join(args.output_dir, "report.md"), "w") as f:
        f.write(text)
    return text


def diagnosis_inputs(cfg, dataset: Optional[str], num_images: int) -> List[Dict]:
    """The first ``num_images`` test images through the config's test mapper with their ground
    truth kept (``is_train=True`` on the same resizing), so the students can compute their task
    losses; evaluation-mode models ignore it."""
    cfg = copy.deepcopy(cfg)
    mapper = cfg.dataloader.test.mapper
    if "is_train" not in mapper:
        raise ValueError(f"the test mapper {mapper.get('_target_')} takes no is_train: the "
                         "diagnosis needs the ground truth of its images (Detectron2's "
                         "DatasetMapper keeps it with is_train=True)")
    mapper.is_train = True
    return visualize_mkd.load_inputs(cfg, dataset, num_images)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", default=[],
                        help="finished run directories (config.yaml, model_final.pth, "
                             "metrics.json)")
    parser.add_argument("--config-file", help="one more run: its config (with --checkpoint)")
    parser.add_argument("--checkpoint", help="that run's weights; metrics.json beside them is "
                                             "read if present")
    parser.add_argument("--images", type=int, default=32, help="the first N test images")
    parser.add_argument("--dataset", default=None,
                        help="a registered dataset (default: the first run's test set)")
    parser.add_argument("--seed", type=int, default=0, help="the MKD runs' mask seed")
    parser.add_argument("--teacher-weights", default=None,
                        help="the teacher's weights (default: each run's model.teacher_weights)")
    parser.add_argument("--ridge", type=float, default=1e-2,
                        help="the linear readout's ridge, relative to the fitted positions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output-dir", default="./output/diagnose")
    args = parser.parse_args(argv)
    if bool(args.config_file) != bool(args.checkpoint):
        parser.error("--config-file and --checkpoint go together")
    if not args.runs and not args.config_file:
        parser.error("give --runs DIR [DIR ...] and/or --config-file CFG --checkpoint CKPT")
    if args.images < 2:
        parser.error("--images must be at least 2 (the linear readout fits on half of them)")
    return args


def main(argv=None) -> List[RunRecord]:
    """Measures every run, writes the report and figures; returns the runs with their
    measurements."""
    args = parse_args(argv)
    records = [load_run(d) for d in args.runs]
    if args.config_file:
        cfg = LazyConfig.load(args.config_file)
        method = method_of(cfg)
        records.append(RunRecord(f"{method}: {os.path.basename(args.checkpoint)}", method, cfg,
                                 args.checkpoint, os.path.dirname(args.checkpoint)))
    distilled = [r for r in records if r.method != "none"]
    if not distilled:
        raise ValueError("no distilled run among the runs: the teacher comes from a distilled "
                         "run's config (model.teacher, model.teacher_weights); add one")
    # Distilled runs first: the first one's teacher is the undistilled runs' reference.
    records = distilled + [r for r in records if r.method == "none"]
    os.makedirs(args.output_dir, exist_ok=True)
    inputs = diagnosis_inputs(distilled[0].cfg, args.dataset, args.images)
    mkd_runs = [r for r in distilled if r.method == "mkd"]
    mode = mkd_runs[0].cfg.model.distiller.feature_loss.normalize if mkd_runs else "channel"
    levels, teachers = None, {}  # teacher weights -> teacher_maps; the first serves "none" runs
    for run in records:
        print(f"[diagnose] {run.name}", flush=True)
        model = build_model(run, args.seed, args.teacher_weights, args.device)
        if run.method == "none":
            teacher = next(iter(teachers.values()))
        else:
            levels = levels or model.levels
            weights = args.teacher_weights or run.cfg.model.teacher_weights
            if weights not in teachers:
                teachers[weights] = teacher_maps(model, inputs)
            teacher = teachers[weights]
        run.task_losses = task_losses(model, inputs)
        run.task_terms = sorted(run.task_losses)
        run.errors = reconstruction_errors(model, inputs, teacher, levels, mode, args.ridge)
        if run.method in WEIGHED:
            run.weighting, run.gradients = level_weighting(model, inputs)
        del model
    figures = {"losses": plot_losses(records, args.output_dir),
               "errors": [os.path.join(args.output_dir, "reconstruction_error.png")],
               "weighting": []}
    plot_errors(records, figures["errors"][0])
    weighted = [r for r in records if r.weighting]
    if weighted:
        figures["weighting"] = [os.path.join(args.output_dir, "level_weighting.png")]
        plot_weighting(weighted, figures["weighting"][0])
    print(write_report(records, args, mode, figures), flush=True)
    print(f"Wrote {os.path.join(args.output_dir, 'report.md')} and "
          + ", ".join(os.path.basename(p) for ps in figures.values() for p in ps), flush=True)
    return records


if __name__ == "__main__":
    main()
