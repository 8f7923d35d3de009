"""Section 3 of the diagnosis: how an MKD or mimic run weighs its levels, in training mode on
one batch: each level's term of each loss, weighted as in training, and the gradient it alone
sends into the student's bottom-up network, next to the task loss's gradient. MKD's terms are
its distiller's own (``MKDDistiller.reconstruct`` then ``level_terms``); mimic's are its
``level_terms``, its adapter on the clean student: the control for MKD's decoder."""
import math
from typing import Dict, List, Sequence

import torch
from detectron2.utils.events import EventStorage

from mkd import DistillContext, FeatureDistillation, MKDDistiller
from mkd.modeling.meta_arch import image_key
from mkd_bench.diagnose.records import training_mode

WEIGHED = ("mkd", "mimic")  # the methods whose per-level weighting section 3 measures
WEIGHTING_COLUMNS = [
    "level", "positions/image", "feature term", "feature share", "global term", "global share",
    "feature grad", "feature grad share", "global grad", "global grad share",
]
GLOBAL_LOSS = "loss_mkd_global"  # MKD's; mimic has none


def gradient(loss: torch.Tensor, parameters: Sequence[torch.Tensor]) -> torch.Tensor:
    """d loss / d parameters, flattened into one vector (zeros where a parameter is unused)."""
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, parameters)])


def shares(values: Sequence[float]) -> List[float]:
    total = sum(values)
    return [v / total if total else math.nan for v in values]


def distillation_terms(model: FeatureDistillation, images: torch.Tensor,
                       inputs: Sequence[Dict], teacher: Dict[str, torch.Tensor]):
    """``{loss name: (weight, {level: term})}`` as the run's distiller weighs them, and the
    distiller's own losses on the same student features (its forward: what training sums).
    MKD: its decoder on the masked student (masks of step 0); mimic: its adapter on the clean
    student (no mask, no global loss)."""
    distiller, mask = model.distiller, None
    if isinstance(distiller, MKDDistiller):
        sizes = [tuple(x["image"].shape[-2:]) for x in inputs]
        mask = model.masker(sizes, [image_key(x, i) for i, x in enumerate(inputs)], step=0,
                            device=model.device)
        masked = model.masked_student_features(images, mask)
        student = {k: masked[k] for k in model.levels}
        terms = distiller.level_terms(distiller.reconstruct(student, mask), teacher, mask)
    else:
        clean = model.student.backbone(images)
        student = {k: clean[k] for k in model.levels}
        terms = distiller.level_terms(student, teacher)
    context = DistillContext(image_size=tuple(images.shape[-2:]), mask=mask)
    with torch.no_grad():
        return terms, distiller(student, teacher, context)


def level_weighting(model: FeatureDistillation, inputs: Sequence[Dict]):
    """Section 3 for one MKD or mimic run (``WEIGHED``), on ``inputs`` as one batch (training
    mode, restored after): a row per level (``WEIGHTING_COLUMNS``), and the totals: the summed
    per-level terms against the distiller's own losses (they must agree), and the gradient
    norms of the task loss (clean pass) and of the whole distillation loss, with their
    cosine."""
    with training_mode(model), EventStorage():
        student = model.student
        images = student.preprocess_image(inputs).tensor
        teacher = model.teacher_features(inputs, images)
        parameters = [p for p in student.backbone.bottom_up.parameters() if p.requires_grad]
        task = sum(student(inputs).values())
        terms, whole = distillation_terms(model, images, inputs, teacher)
        feature_name = ("loss_mkd_feat" if isinstance(model.distiller, MKDDistiller)
                        else "loss_mimic")
        weight, per_level = terms[feature_name]
        feature_terms = [weight * per_level[k] for k in model.levels]
        global_terms = []
        if GLOBAL_LOSS in terms:
            weight, per_level = terms[GLOBAL_LOSS]
            global_terms = [weight * per_level[k] for k in model.levels]
        feature_grads = [float(gradient(term, parameters).norm()) for term in feature_terms]
        global_grads = [float(gradient(term, parameters).norm()) for term in global_terms]
        task_grad = gradient(task, parameters)
        distill_grad = gradient(sum(feature_terms) + sum(global_terms), parameters)
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
        "feature loss, all levels at once": float(whole[feature_name]),
        "global loss, sum of level terms": sum(global_values),
        "global loss, all levels at once": float(whole.get(GLOBAL_LOSS, math.nan)),
        "task loss (clean pass)": float(task),
        "task grad norm": float(task_grad.norm()),
        "distillation grad norm": float(distill_grad.norm()),
        "distillation / task grad norm": float(distill_grad.norm() / task_grad.norm()),
        "cosine(task grad, distillation grad)": cosine,
    }
    return rows, totals
