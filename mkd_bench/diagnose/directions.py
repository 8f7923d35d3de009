"""Section 4 of the diagnosis (E8): what MKD's decoder leaves to the student, next to mimic's
adapter. The two runs' trained distillers score the same student weights on the same batch,
and each sends a gradient into that student's bottom-up network: their norms per level, the
cosine between MKD's and mimic's, and each one's with the task's. The student weights are each
run's own in turn, so the directions are compared where MKD, mimic and the plain student ended.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from detectron2.utils.events import EventStorage

from mkd import FeatureDistillation
from mkd_bench.diagnose.records import training_mode
from mkd_bench.diagnose.weighting import distillation_terms, gradient

ALL_LEVELS = "all levels"
DIRECTION_COLUMNS = ["student", "level", "MKD grad", "mimic grad", "mimic / MKD",
                     "cosine(MKD, mimic)"]
TOTAL_COLUMNS = ["student", "task grad", "cosine(MKD, task)", "cosine(mimic, task)"]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """In float64: over millions of parameters float32 sums drift past 1."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def level_gradients(model: FeatureDistillation, inputs: Sequence[Dict], with_task: bool = True,
                    ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
    """Per level, the gradient that the distiller's weighted terms at that level (every loss)
    send into the student's bottom-up parameters, their sum's under ``ALL_LEVELS``, and the task
    loss's (clean pass; ``None`` without ``with_task``): training mode on one batch, every weight
    restored afterwards."""
    with training_mode(model), EventStorage():
        student = model.student
        images = student.preprocess_image(inputs).tensor
        teacher = model.teacher_features(inputs, images)
        parameters = [p for p in student.backbone.bottom_up.parameters() if p.requires_grad]
        task = gradient(sum(student(inputs).values()), parameters) if with_task else None
        terms, _ = distillation_terms(model, images, inputs, teacher)
        per_level = {k: sum(weight * level_terms[k] for weight, level_terms in terms.values())
                     for k in model.levels}
        grads = {k: gradient(term, parameters) for k, term in per_level.items()}
        grads[ALL_LEVELS] = gradient(sum(per_level.values()), parameters)
    return grads, task


def gradient_directions(mkd: FeatureDistillation, mimic: FeatureDistillation,
                        students: Mapping[str, Dict[str, torch.Tensor]], inputs: Sequence[Dict],
                        ) -> Tuple[List[Dict], List[Dict]]:
    """Section 4: for each named student state dict, a row per level (``DIRECTION_COLUMNS``)
    and one of totals (``TOTAL_COLUMNS``). ``mkd`` and ``mimic``: the two runs' models (their
    students are overwritten by each state dict in turn)."""
    if list(mkd.levels) != list(mimic.levels):
        raise ValueError(f"the MKD run distils {mkd.levels}, the mimic run {mimic.levels}: "
                         "compare runs of one pair")
    rows, totals = [], []
    for name, weights in students.items():
        grads = {}
        mkd.student.load_state_dict(weights)
        mimic.student.load_state_dict(weights)
        # One student: one task gradient (MKD's pass, where the clean pass comes first).
        grads["MKD"], task = level_gradients(mkd, inputs)
        grads["mimic"], _ = level_gradients(mimic, inputs, with_task=False)
        for level in [*mkd.levels, ALL_LEVELS]:
            a, b = grads["MKD"][level], grads["mimic"][level]
            rows.append(dict(zip(DIRECTION_COLUMNS, (
                name, level, float(a.norm()), float(b.norm()),
                float(b.norm() / a.norm()) if a.norm() else float("nan"), cosine(a, b)))))
        totals.append(dict(zip(TOTAL_COLUMNS, (
            name, float(task.norm()), cosine(grads["MKD"][ALL_LEVELS], task),
            cosine(grads["mimic"][ALL_LEVELS], task)))))
    return rows, totals
