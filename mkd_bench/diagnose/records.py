"""The runs a diagnosis reads, and what it measures them with: each run's config, checkpoint
and logged losses (section 1's rows), its model as trained, the test images with their ground
truth, and its student's task losses on them."""
import contextlib
import copy
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from detectron2.config import LazyConfig
from detectron2.utils.events import EventStorage
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

from mkd import FeatureDistillation
from mkd_bench import runs
from mkd_bench.figures import reconstructions
from mkd_bench.pairs import LOSS_WEIGHTS


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
    keys = LOSS_WEIGHTS.get(run.method, [])
    return ", ".join(f"{k.rsplit('.', 1)[-1]} {OmegaConf.select(run.cfg, k):g}" for k in keys)


def loss_rows(run: RunRecord) -> List[Dict]:
    """Section 1: the training rows of metrics.json, with ``trained`` iterations, the task loss,
    the distillation loss and their ratio (Detectron2 logs each term's median over its
    window)."""
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
    return reconstructions.build_model(cfg, run.checkpoint, seed,
                                       "--runs or --checkpoint").to(device)


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
    return reconstructions.load_inputs(cfg, dataset, num_images)


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
