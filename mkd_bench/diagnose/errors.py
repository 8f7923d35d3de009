"""Section 2 of the diagnosis: how far from the teacher's features each level is, per
prediction (``ERROR_COLUMNS``): the teacher's mean (the baseline), MKD's decoder at all, hidden
and visible positions and fed another image's student, the clean student channel for channel
and through the best 1x1 linear readout, the distiller's own adapter. The decoder runs as
training runs it: ``MKDDistiller.reconstruct`` on the masked pass with BN on batch statistics,
its hidden positions the distiller's own (``hidden_positions``)."""
import math
from typing import Dict, List, Sequence

import torch
from torch import nn

from mkd import FeatureDistillation, MKDDistiller, normalize_features
from mkd.modeling.meta_arch import image_key
from mkd_bench.diagnose.records import student_of

BASELINE = "teacher mean (baseline)"
DECODER = ("decoder, all", "decoder, hidden", "decoder, visible")
OTHER_STUDENT = "decoder, another image's student"
RAW = "student, raw"
READOUT = "student, linear readout"
ADAPTER = "student, own adapter"
ERROR_COLUMNS = [BASELINE, *DECODER, OTHER_STUDENT, RAW, READOUT, ADAPTER]


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
def teacher_maps(model: FeatureDistillation,
                 inputs: Sequence[Dict]) -> List[Dict[str, torch.Tensor]]:
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
            decoded = distiller.reconstruct(*decoder_inputs[-1])
            hidden = distiller.hidden_positions(decoded, mask)
            for k in levels:
                error = squared_error_map(decoded[k].cpu(), t[k], mode)
                hidden_share = hidden[k][:, 0].cpu()
                for column, weight in zip(DECODER, (torch.ones_like(error), hidden_share,
                                                    1 - hidden_share)):
                    maps[column][k][0].append(error)
                    maps[column][k][1].append(weight)
    # Each image's teacher against the decoder fed the previous image's student (the first's:
    # the last's), where the two have one size.
    for i, t in enumerate(teacher if len(decoder_inputs) > 1 else []):
        features, mask = decoder_inputs[i - 1]
        if any(features[k].shape[-2:] != t[k].shape[-2:] for k in levels):
            continue
        decoded = distiller.reconstruct(features, mask)
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

