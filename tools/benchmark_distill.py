#!/usr/bin/env python
"""Distillation benchmark: one teacher, one student, one schedule; a row per method (none,
mimic, FGD, FGD's published recipe, MGD, MKD) over seeds, on the shapes pair by default
(``configs/shapes/``; ``--pair digits``: the R50 -> R18 pair of ``configs/builtin/``).

``--task sem_seg`` benchmarks semantic segmentation with the same commands: the shapes
segmentation pair (``configs/shapes_seg/``: none, mimic, MGD, MKD; FGD needs boxes) scored by
mIoU instead of box AP, its table ending with a figure of predictions
(``tools/visualize_sem_seg.py``: image, ground truth, teacher, student, student + MKD).
``--pair`` implies its task.

Three commands share one cache (every run lives in a directory named by its config hash, so an
interrupted command continues where it stopped)::

    python tools/benchmark_distill.py --tune          # weight grid on the tuning seeds
    python tools/benchmark_distill.py                 # the table, on the reported seeds
    python tools/benchmark_distill.py --ablations     # MKD's open questions

``--tune`` gives mimic, FGD, MGD and MKD the same budget: x0.3, x1 and x3 of their calibrated
loss weights (one factor on all of a method's weights), on ``--tune-seeds``; it writes the factor
of the best mean AP (mIoU) per method to ``tuned_factors.json``. ``--grid F ...`` sets other
factors: a later ``--tune`` with the same options adds its grid points to the file's (e.g.
``--grid 9`` extends a grid whose best was its top) and chooses again over all of them, so every
method can be tuned until its best lies inside its grid. ``--calibration gradient``
centres every method's grid instead on the weights that give it the task's gradient at the
student's FPN outputs at initialisation (``--probe``'s factors, from ``calibration.json``).
The table uses those factors (without the file: the calibrated weights, with a warning) on
``--seeds``, which must be other seeds. It reports mean ± std of box AP (mIoU), the standard
error of each method's difference from none, the share of the teacher-student gap closed, the
time per iteration relative to none, the mean curves as a PNG, and the issue's targets met or
missed.

``--ablations [NAME ...]`` trains MKD's variants of ``ABLATIONS`` (and the controls there that
vary another method) beside none and MKD (the table's runs: same weights, same cache) and
writes ``results_ablations.md``. Extra ``path.key=value`` arguments apply to every distilled
run, with ``--tag`` naming them.

``--probe N`` calibrates instead: each distilled method's distillation and task losses at
initialisation (trained teacher, N batches, no update), with the factor on the method's loss
weights that gives it MKD's initial distillation-to-task ratio (the calibrated weights x1 should
show factor 1), and the factor that makes its gradient at the student's FPN outputs equal the
task's (the gradient rule).

A pair with ``pretrained=True`` (shapes, shapes_seg; any pair with ``--pretrained``) starts
the teacher and every student from the bottom-up of ``tools/pretrain_backbone.py`` (trained
before the teacher on the first command, then found in its cache); runs name its hashed
checkpoint, not the fixed link the configs default to, so a change of the pretraining settings
is a new teacher and new runs. ``--no-pretrained`` trains a pretrained pair from scratch.

``--smoke`` runs any mode for a few iterations on a few generated images (for tests).
"""
import argparse
import json
import math
import os
import statistics
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import runs  # tools/runs.py: this script's directory is on sys.path


@dataclass(frozen=True)
class Task:
    """What the runs of a pair learn and are scored on."""
    evaluation: str  # Detectron2's evaluation task: a key of runs.TASK_METRICS, headline first
    losses: Sequence[str]  # the task's training losses; a distilled run's others distil
    default_pair: str
    smoke_score: Sequence[str] = ()  # lets a five-iteration model score at all (--smoke)

    @property
    def metrics(self) -> Sequence[str]:
        return runs.TASK_METRICS[self.evaluation]

    @property
    def metric(self) -> str:
        return self.metrics[0]


TASKS = {
    "detection": Task("bbox", ("loss_cls", "loss_box_reg"), "shapes",
                      smoke_score=("model.test_score_thresh=0.0",)),
    "sem_seg": Task("sem_seg", ("loss_sem_seg",), "shapes_seg"),
}


@dataclass(frozen=True)
class Pair:
    """A teacher and the configs of the student's rows, all in ``configs/<folder>/``."""
    dataset: str  # the built-in dataset: mkd_<dataset>_{train,val}
    folder: str
    teacher: str
    methods: Dict[str, str]  # row -> config name
    teacher_iter: Optional[int] = None  # None: the config's own schedule
    student_iter: Optional[int] = None
    pretrained: bool = False  # every run starts from tools/pretrain_backbone.py's bottom-up
    task: str = "detection"  # a key of TASKS
    # The detector (<folder>/<name>) whose bottom-up tools/pretrain_backbone.py pretrains, by
    # classifying crops of its boxes; "": the student's own config.
    pretraining_config: str = ""
    # Applied to every run of the pair (teacher, students, pretraining): e.g. other data.
    overrides: Tuple[str, ...] = ()
    # A teacher of another bottom-up than the student's: the detector (<folder>/<name>) whose
    # pretrained bottom-up it starts from; "": it starts from the student's.
    teacher_pretraining_config: str = ""


PAIRS = {
    "shapes": Pair("shapes", "shapes", "teacher", {
        "none": "student", "mimic": "mimic", "fgd": "fgd", "fgd_recipe": "fgd_recipe",
        "mgd": "mgd", "mkd": "mkd"}, pretrained=True),
    "digits": Pair("digits", "builtin", "retinanet_R50_scratch", {
        "none": "retinanet_R18_scratch", "mimic": "retinanet_R50_to_R18_mimic",
        "fgd": "retinanet_R50_to_R18_fgd", "mgd": "retinanet_R50_to_R18_mgd",
        "mkd": "retinanet_R50_to_R18_mkd"}, teacher_iter=900, student_iter=150),
    # A segmentation split has no boxes to pretrain on: the shapes detector's student has the
    # same ResNet-18 bottom-up (state-dict keys and shapes) and the same train images.
    # Pretrained (measured, seed 0): teacher 51.9 mIoU, student 15.1; from scratch the teacher
    # reaches only 22.0 against the student's 14.1, too close to judge a distillation.
    "shapes_seg": Pair("shapes", "shapes_seg", "teacher", {
        "none": "student", "mimic": "mimic", "mgd": "mgd", "mkd": "mkd"}, pretrained=True,
        task="sem_seg", pretraining_config="shapes/student"),
}
# The second instance of the proxy: the shapes pair's configs on the shapes regenerated from
# another generator seed, with its own pretrained bottom-up and teacher.
PAIRS["shapes_seed1"] = replace(PAIRS["shapes"], dataset="shapes_seed1", overrides=(
    "dataloader.train.dataset.names=mkd_shapes_seed1_train",
    "dataloader.test.dataset.names=mkd_shapes_seed1_val"))
# A deeper teacher (R34 into R18, as the published comparisons distil R101 into R50), from its
# own pretrained bottom-up; FGD's recipe (student from teacher) cannot apply.
PAIRS["shapes_r34"] = Pair("shapes", "shapes_r34", "teacher", {
    "none": "student", "mimic": "mimic", "fgd": "fgd", "mgd": "mgd", "mkd": "mkd"},
    pretrained=True, teacher_pretraining_config="shapes_r34/teacher")
METHODS = ["none", "mimic", "fgd", "fgd_recipe", "mgd", "mkd"]
#: Every loss weight of a tuned method: the tuning factor multiplies them all (keeps their balance).
LOSS_WEIGHTS = {
    "mimic": ["model.distiller.weight"],
    "fgd": ["model.distiller.alpha_fg", "model.distiller.beta_bg",
            "model.distiller.gamma_attention", "model.distiller.lambda_global"],
    "mgd": ["model.distiller.alpha"],
    "mkd": ["model.distiller.feature_weight", "model.distiller.global_weight"],
}
FACTORS = (0.3, 1.0, 3.0)
TUNING_FILE = "tuned_factors.json"
#: --probe's factors per method: the x1 of --tune's grid under --calibration gradient.
CALIBRATION_FILE = "calibration.json"
BASELINES = ("mimic", "fgd", "mgd")  # what MKD must beat, at equal tuning budgets
#: Published recipes, compared with MKD on their own line: FGD's starts the student's neck and
#: head from the teacher's, which on a same-architecture pair copies most of the teacher.
RECIPES = ("fgd_recipe",)
#: Mimic at x3 its calibrated weight (2.0), the last tuning's choice: the controls' mimic.
MIMIC_X3 = "model.distiller.weight=6.0"
#: Masked mimicking's patch masker: MKD's (configs/common/mkd.py), as an override.
MKD_MASKER = "model.masker={_target_:mkd.masking.PatchMasker,patch_size:32,mask_ratio:0.5}"
#: The distiller's parameters trained by AdamW, the student's by its SGD (mkd.solver).
DISTILLER_ADAMW = ["optimizer._target_=mkd.solver.SGDWithAdamWGroups",
                   "optimizer.params._target_=mkd.solver.distillation_param_groups",
                   "+optimizer.params.base_lr=${optimizer.lr}",
                   "+optimizer.params.distiller_lr_factor=0.1",
                   "+optimizer.params.distiller_adamw=True"]
#: MKD's open questions: one row each, every other setting as in the table's MKD row. A value
#: ``(method, overrides)`` varies another method's row instead (the controls of MKD's parts).
ABLATIONS = {
    # The decoder (and every distiller part) at 10x the student's learning rate: the diagnosis
    # found it hardly reconstructing the teacher at the shared SGD rate (mkd.solver).
    "distiller-lr-x10": ["optimizer.params._target_=mkd.solver.distillation_param_groups",
                         "+optimizer.params.base_lr=${optimizer.lr}",
                         "+optimizer.params.distiller_lr_factor=10"],
    # FGD's published recipe applied to MKD: the student's neck and head start from the
    # teacher's, so that row and MKD's differ only in the distillation.
    "init-from-teacher": ["model.init_student_from_teacher=True"],
    # One masked pass; BN running statistics frozen there and estimated on clean training
    # images before each evaluation (Detectron2's PreciseBN on the student).
    "single-pass-frozen-bn": ["model.task_pass=masked", "model.freeze_norm_statistics=True",
                              "train.precise_bn.enabled=True", "train.precise_bn.num_iter=20"],
    "no-global-loss": ["model.distiller.global_loss=null"],
    "hidden-positions-only": ["model.distiller.feature_loss.positions=hidden"],
    "mask-ratio-0.3": ["model.masker.mask_ratio=0.3"],
    "mask-ratio-0.75": ["model.masker.mask_ratio=0.75"],
    "decoder-depth-1": ["model.distiller.decoder.depth=1"],
    "decoder-depth-4": ["model.distiller.decoder.depth=4"],
    # BN in the masked pass (MaskedConvolutions): plain batch statistics over every position
    # (hidden ones included), or the clean task pass's; the default is visible positions only.
    "norm-batch": ["model.masked_norm_statistics=batch"],
    "norm-clean": ["model.masked_norm_statistics=clean"],
    # Masking against decoder: MKD's decoder with nothing hidden, and mimic's 1x1 adapter on the
    # masked student, each beside mimic as in the table (the tuned weight x3 of the last tuning).
    "mask-ratio-0": ["model.masker.mask_ratio=0.0"],
    "mimic-x3": ("mimic", [MIMIC_X3]),
    "mimic-x3-masked": ("mimic", [MIMIC_X3, "model.distiller.masked=True", MKD_MASKER]),
    # Tokens finer than the 32-pixel patches (at 128 px one token per patch is 4x4 per level).
    "tokens-8": ["model.distiller.decoder.token_stride=8"],
    "tokens-16": ["model.distiller.decoder.token_stride=16"],
    # What the decoder leaves to the student: no transformer (per-token maps, no context).
    "decoder-depth-0": ["model.distiller.decoder.depth=0"],
    # AdamW (lr 1e-3: 0.1 x the student's) for the distiller's parameters, SGD for the student;
    # mimic's adapter gets the same lever.
    "distiller-adamw": DISTILLER_ADAMW,
    "mimic-x3-adamw": ("mimic", [MIMIC_X3, *DISTILLER_ADAMW]),
    # E5, weights by the gradient rule (--probe 4 on the shapes pair: the factor that makes a
    # method's gradient at the student's FPN outputs equal the task's at initialisation): MKD
    # x4.94 (its FPN gradient ratio at x1 is 0.20), and x3 that; MGD x31.7 (ratio 0.03); mimic's
    # is x1.03 and FGD's x1.95, inside or next to the loss-ratio grid both were tuned on.
    "mkd-grad-x1": ["model.distiller.feature_weight=4.94", "model.distiller.global_weight=4.94"],
    "mkd-grad-x3": ["model.distiller.feature_weight=14.8", "model.distiller.global_weight=14.8"],
    "mgd-grad-x1": ("mgd", ["model.distiller.alpha=4.5e-3"]),
    # The grid's edges extended by one x3 step: MKD's best so far is its top (x14.8), mimic's
    # too (x3 of its calibrated weight 2.0); equal budget extends both.
    "mkd-grad-x9": ["model.distiller.feature_weight=44.5", "model.distiller.global_weight=44.5"],
    "mimic-x9": ("mimic", ["model.distiller.weight=18.0"]),
    # E8, the gradient the decoder passes back: the student pulled as at x3 or x1/3 of the
    # table's MKD weights while the decoder and the losses stay at them (this project's knob).
    # The weights set both the student's pull and the decoder's pace; these rows part them.
    "student-gradient-x3": ["model.distiller.student_gradient_scale=3.0"],
    "student-gradient-x0.33": ["model.distiller.student_gradient_scale=0.333"],
    # E6, the coarse levels: per-channel standardisation over a 2x2 P6 leaves a target of signs
    # and a 1x1 P7 none at all, yet P6 sent most of the feature loss's gradient. Standardise
    # each position over its channels instead, or distil P3-P5 only.
    "feature-norm-layernorm": ["model.distiller.feature_loss.normalize=layernorm"],
    "levels-p3-p5": ["model.levels=[p3,p4,p5]"],
    # A LayerNorm on the student's tokens after SAM: the diagnosis found the decoder scoring
    # as well on another image's student as on its own (it fits the teacher from positions).
    "sam-norm": ["model.distiller.decoder.sam_norm=True"],
    # This project's variant: a 1x1 conv from the student to the teacher's channels added to
    # the decoder's output (mimicking's direct path beside the decoder).
    "residual-adapter": ["model.distiller.decoder.residual_adapter=True"],
    # The decoder the shapes configs used before the spec's width 256 and 8 heads became their
    # default (measured: +2.11 AP, same time per iteration): width 128 and 4 heads (at P3 a
    # 32-pixel token squeezes 4x4x128 values through the width: 16x, not 8x), and each level
    # its own sequence instead of one with a level embedding (the spec: measure both).
    "decoder-width-128": ["model.distiller.decoder.width=128",
                          "model.distiller.decoder.num_heads=4"],
    "levels-per-sequence": ["model.distiller.decoder.one_sequence=False"],
    # E9, context to reconstruct from: 16-pixel patches hide less of each 15-51 px shape, so
    # more of what is hidden follows from what is visible (tokens follow the patch: compare
    # tokens-16, the same token grid under 32-pixel patches).
    "mask-patch-16": ["model.masker.patch_size=16"],
}
SMOKE_ITER = 5  # Detectron2 times iterations after the third
# A five-iteration teacher has unsettled BN statistics: its raw P6/P7 features reach hundreds,
# and FGD's and MGD's raw-feature losses (weighted for a trained teacher) would diverge.
_FGD_SMOKE = ["model.distiller.alpha_fg=1e-9", "model.distiller.beta_bg=1e-9",
              "model.distiller.gamma_attention=1e-9", "model.distiller.lambda_global=1e-9"]
SMOKE_OVERRIDES = {"fgd": _FGD_SMOKE, "fgd_recipe": _FGD_SMOKE,
                   "mgd": ["model.distiller.alpha=1e-9"]}
SMOKE_PRETRAINING = dict(iters=2, batch_size=4, crop_size=32)  # tools/pretrain_backbone.Settings
PROBE_COLUMNS = ["method", "task loss", "distillation loss", "ratio", "factor to MKD's ratio",
                 "FPN gradient ratio", "factor to gradient ratio 1"]
#: The predictions figure of a segmentation table: row -> column title.
FIGURE_COLUMNS = {"none": "student", "mkd": "student + MKD"}


def columns(task: Task) -> List[str]:
    """The table's columns: the headline metric's statistics, then the task's other metrics."""
    m = task.metric
    return (["method", "weights", "seeds", "diverged", m, f"{m} std", f"{m} - none",
             "SE of diff"]
            + list(task.metrics[1:]) + ["gap closed", "time/iter vs none"])


def tune_columns(task: Task) -> List[str]:
    return ["method", "seeds", "diverged", task.metric, f"{task.metric} std", "chosen"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=list(TASKS),
                        help="what the students learn: detection (box AP, default pair shapes) "
                             "or sem_seg (mIoU, default pair shapes_seg); default: the pair's, "
                             "else detection")
    parser.add_argument("--pair", choices=list(PAIRS),
                        help="default: the task's (" + ", ".join(
                            f"{name}: {task.default_pair}" for name, task in TASKS.items()) + ")")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--pretrained", action="store_const", const=True,
                       help="start every run from tools/pretrain_backbone.py's bottom-up "
                            "(default: as the pair does; departing from it, --output-dir "
                            "defaults to <pair>_pretrained)")
    start.add_argument("--no-pretrained", dest="pretrained", action="store_const", const=False,
                       help="train every run from scratch (default --output-dir: "
                            "<pair>_scratch, if the pair is pretrained)")
    parser.add_argument("--methods", nargs="+", choices=METHODS,
                        help="rows to train (default: every row of the pair)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                        help="the reported seeds")
    parser.add_argument("--tune-seeds", nargs="+", type=int, default=[100, 101],
                        help="the seeds --tune chooses the weights on (not reported)")
    runs.add_schedule_arguments(parser, teacher_iter=None, student_iter=None)
    parser.add_argument("--output-dir", default=None,
                        help="default ./output/benchmark_distill/<pair>")
    parser.add_argument("--tag", default="", help="names the extra overrides' variant")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tune", action="store_true",
                      help=f"train the weight grid (--grid) on --tune-seeds, write "
                           f"{TUNING_FILE}")
    mode.add_argument("--ablations", nargs="*", choices=list(ABLATIONS), metavar="NAME",
                      help=f"MKD's variants (default all: {', '.join(ABLATIONS)})")
    mode.add_argument("--probe", type=int, default=0, metavar="N",
                      help="only measure each method's initial losses and gradients over N "
                           f"batches (writes {CALIBRATION_FILE})")
    parser.add_argument("--grid", nargs="+", type=float, default=list(FACTORS), metavar="F",
                        help="--tune's factors on each method's x1; added to those already in "
                             f"{TUNING_FILE} for the same options (default: {FACTORS})")
    parser.add_argument("--factors-from", metavar="DIR",
                        help=f"the table takes the weights tuned in another benchmark directory "
                             f"(its {TUNING_FILE}), unchanged: another instance of the proxy "
                             "judged with the weights chosen on the first")
    parser.add_argument("--calibration", choices=["loss", "gradient"], default="loss",
                        help="the x1 of the --tune grid: the configs' weights (loss: every "
                             "method at MKD's initial loss ratio), or those scaled to an initial "
                             "FPN gradient equal to the task's (gradient: --probe's factors)")
    parser.add_argument("--smoke", action="store_true", help="a few iterations on 8 images")
    parser.add_argument("overrides", nargs="*", help="path.key=value for the distilled runs")
    args = parser.parse_args(argv)
    if args.pair and args.task and PAIRS[args.pair].task != args.task:
        parser.error(f"the {args.pair} pair is a {PAIRS[args.pair].task} pair, not {args.task}: "
                     f"drop --task, or choose a {args.task} pair ("
                     + ", ".join(n for n, p in PAIRS.items() if p.task == args.task) + ")")
    if args.factors_from and (args.tune or args.probe):
        parser.error("--factors-from gives the table another directory's tuned weights: drop it "
                     "to --tune or --probe this pair")
    args.pair = args.pair or TASKS[args.task or "detection"].default_pair
    pair = PAIRS[args.pair]
    args.task = pair.task
    departs = args.pretrained is not None and args.pretrained != pair.pretrained
    if args.pretrained is None:
        args.pretrained = pair.pretrained
    args.methods = args.methods or [m for m in METHODS if m in pair.methods]
    missing = [m for m in args.methods if m not in pair.methods]
    if missing:
        parser.error(f"the {args.pair} pair has no config for {missing}: choose among "
                     f"{list(pair.methods)}")
    if args.ablations == []:
        args.ablations = list(ABLATIONS)
    suffix = ("_pretrained" if args.pretrained else "_scratch") if departs else ""
    args.output_dir = os.path.abspath(
        args.output_dir or os.path.join("output", "benchmark_distill", args.pair + suffix))
    return args


def config_file(args, method: str, pair: str = "") -> str:
    """The config of ``method``'s row in ``pair`` (``""``: the command's pair)."""
    pair = PAIRS[pair or args.pair]
    return runs.config_path(pair.methods[method], pair.folder)


def scaled_weights(config: str, overrides: Sequence[str], method: str, factor: float):
    """Overrides multiplying every loss weight of ``method`` by ``factor``, on the values the
    config has with ``overrides`` applied."""
    if factor == 1.0:
        return []
    from omegaconf import OmegaConf

    cfg = runs.load_config(config, overrides)
    return [f"{key}={OmegaConf.select(cfg, key) * factor!r}" for key in LOSS_WEIGHTS[method]]


@dataclass
class Row:
    """A row of a table: a method with extra overrides, trained on ``seeds``."""
    name: str
    method: str
    seeds: Sequence[int]
    extra: Sequence[str] = ()
    factor: float = 1.0  # on the method's calibrated loss weights


def table_rows(args, factors: Dict[str, float]) -> List[Row]:
    """The table's rows, at the tuned factors (``factors``; x1 where a method has none)."""
    suffix = f"[{args.tag}]" if args.tag else ""
    return [Row(m + (suffix if m != "none" else ""), m, args.seeds,
                [] if m == "none" else list(args.overrides), factors.get(m, 1.0))
            for m in args.methods]


def tuning_rows(args, base: Optional[Dict[str, float]] = None) -> List[Row]:
    """Each tuned method at each factor of the grid, on the tuning seeds only; ``base``: the
    grid's x1 per method (``calibration_factors``; 1 where a method has none)."""
    base = base or {}
    return [Row(f"{m} x{f:g}", m, args.tune_seeds, list(args.overrides), base.get(m, 1.0) * f)
            for m in args.methods if m in LOSS_WEIGHTS for f in args.grid]


def calibration_factors(args, teacher) -> Dict[str, float]:
    """The x1 of ``--tune``'s grid per method: under ``--calibration loss`` the configs'
    calibrated weights (every method at MKD's initial loss ratio: no factor); under
    ``gradient`` those times the factor that makes the method's distillation send the student's
    FPN as large a gradient as the task (``--probe``'s, for this teacher)."""
    if args.calibration == "loss":
        return {}
    path = os.path.join(args.output_dir, CALIBRATION_FILE)
    if not os.path.isfile(path):
        raise SystemExit(f"--calibration gradient needs {path}: run this command with "
                         "--probe 4 in place of --tune first")
    with open(path) as f:
        probed = json.load(f)
    if probed["teacher"] != teacher.output_dir:
        raise SystemExit(f"{path} was probed with the teacher {probed['teacher']}, this "
                         f"command's is {teacher.output_dir}: rerun --probe")
    missing = [m for m in args.methods if m in LOSS_WEIGHTS and m not in probed["gradient"]]
    if missing:
        raise SystemExit(f"{path} has no gradient factor for {missing}: rerun --probe with "
                         "these --methods")
    return probed["gradient"]


def ablation(name: str):
    """``(method, overrides)`` of an ablation: a bare list of overrides varies MKD."""
    value = ABLATIONS[name]
    return value if isinstance(value, tuple) else ("mkd", value)


def ablation_rows(args, factors: Dict[str, float]) -> List[Row]:
    """None and MKD as in the table (the same runs), and each ablation's method (MKD unless it
    says otherwise) with its overrides, at that method's table weights."""
    mkd = factors.get("mkd", 1.0)
    rows = [Row("none", "none", args.seeds), Row("mkd", "mkd", args.seeds, args.overrides, mkd)]
    for name in args.ablations:
        method, extra = ablation(name)
        rows.append(Row(f"{method}[{name}]", method, args.seeds, list(args.overrides) + extra,
                        factors.get(method, 1.0)))
    return rows


def pretrained_bottom_up(args, detector: str = "") -> str:
    """The checkpoint of ``tools/pretrain_backbone.py`` for the bottom-up of ``detector``
    (``<folder>/<name>``; ``""``: the pair's student's), trained now if not in its cache
    (``--smoke``: a tiny one in ``--output-dir``); ``""`` without ``args.pretrained``."""
    if not args.pretrained:
        return ""
    import pretrain_backbone
    from detectron2.utils.logger import setup_logger

    setup_logger(name="mkd.pretrain")  # its progress: minutes on a first command
    settings = pretrain_backbone.Settings(**SMOKE_PRETRAINING if args.smoke else {})
    root = (os.path.join(args.output_dir, "pretrained") if args.smoke
            else os.path.abspath(pretrain_backbone.DEFAULT_OUTPUT_ROOT))
    print(f"[benchmark] the pretrained bottom-up (tools/pretrain_backbone.py) in {root}",
          flush=True)
    detector = detector or PAIRS[args.pair].pretraining_config
    if detector:
        folder, name = detector.split("/")
        config = runs.config_path(name, folder)
    else:
        config = config_file(args, "none")
    return pretrain_backbone.pretrain(config, settings, root,
                                      overrides=PAIRS[args.pair].overrides)


def start_from(bottom_up: str, distilled: bool) -> List[str]:
    """Overrides starting a run from the pretrained ``bottom_up`` (none for ``""``): a plain
    detector loads it as ``train.init_checkpoint``, a distilled one as its student's weights."""
    if not bottom_up:
        return []
    return [f"model.student_weights={bottom_up}" if distilled
            else f"train.init_checkpoint={bottom_up}"]


def student_runs(args, rows: Sequence[Row], teacher, schedule, student_score, bottom_up=""):
    """One run per (row, seed) in ``<output-dir>/<method>/seed<seed>-<config hash>``: a run
    with the same config is the same directory, whichever row or command asks for it.
    ``bottom_up``: the pretrained checkpoint every student starts from (``""``: the configs')."""
    planned, evaluation = {}, TASKS[args.task].evaluation
    for row in rows:
        config = config_file(args, row.method)
        for seed in row.seeds:
            overrides = list(PAIRS[args.pair].overrides) + list(schedule)
            overrides += [f"train.seed={seed}"]
            overrides += start_from(bottom_up, distilled=row.method != "none")
            if row.method == "none":
                overrides += student_score
            else:
                overrides += [f"model.teacher_weights={teacher.output_dir}/model_final.pth"]
                overrides += [s.replace("model.", "model.student.", 1) for s in student_score]
                overrides += list(row.extra)
                if args.smoke:
                    overrides += SMOKE_OVERRIDES.get(row.method, [])
                if row.method == "mkd":
                    overrides.append(f"model.masker.seed={seed}")
                overrides += scaled_weights(config, overrides, row.method, row.factor)
            digest = runs.config_hash(config, overrides)  # a changed config is a new run
            directory = os.path.join(args.output_dir, row.method, f"seed{seed}-{digest}")
            planned.setdefault(row.name, []).append(runs.Run(
                f"{row.name} seed {seed}", config, directory, overrides, evaluation))
    return planned


def unfinished_seed_by_seed(planned: Dict[str, List["runs.Run"]]) -> List["runs.Run"]:
    """The runs still to train, every row's first seed before any row's second: a command cut
    short leaves all methods on the same seeds, comparable, instead of the last rows empty."""
    indexed = [(i, run) for rs in planned.values() for i, run in enumerate(rs) if not run.finished]
    return [run for _, run in sorted(indexed, key=lambda item: item[0])]


def se_of_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of mean(a) - mean(b) for independent seeds: sqrt(s_a²/n_a + s_b²/n_b)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))


def gap_closed(method_score: float, none_score: float, teacher_score: float) -> float:
    """The share of the teacher-student gap (in the mean headline metric) a method closes."""
    gap = teacher_score - none_score
    return (method_score - none_score) / gap if gap else math.nan


def summarize(planned, teacher, rows: Sequence[Row], metrics: Sequence[str]):
    """A row per method from each run's final evaluation of ``metrics`` (the headline first),
    and the teacher's."""
    m = metrics[0]
    teacher_final = teacher.evaluations()[-1]
    factors = {row.name: row.factor for row in rows}
    score = {name: [r.final_score() for r in rs] for name, rs in planned.items()}
    speed = {name: statistics.median(r.seconds_per_iter() for r in rs)
             for name, rs in planned.items()}
    none = score.get("none", [])
    none_score = statistics.mean(none) if none else math.nan
    table = []
    for name, seed_runs in planned.items():
        finals = [r.evaluations()[-1] for r in seed_runs if not r.diverged]
        mean = statistics.mean(score[name])
        row = {"method": name, "weights": "-" if name == "none" else f"x{factors[name]:g}",
               "seeds": len(seed_runs), "diverged": sum(r.diverged for r in seed_runs), m: mean,
               f"{m} std": statistics.stdev(score[name]) if len(seed_runs) > 1 else math.nan,
               f"{m} - none": mean - none_score, "SE of diff": se_of_difference(score[name], none),
               "gap closed": gap_closed(mean, none_score, teacher_final[m]),
               "time/iter vs none": speed[name] / speed.get("none", math.nan)}
        row.update({k: statistics.mean(e[k] for e in finals) if finals else math.nan
                    for k in metrics[1:]})
        table.append(row)
    table.append({"method": "teacher", "seeds": 1, **{k: teacher_final[k] for k in metrics}})
    return table


def verdicts(table: Sequence[Dict], metric: str) -> List[str]:
    """The issue's three targets for MKD, each met or missed by how much (in ``metric``)."""
    by_name = {row["method"]: row for row in table}
    mkd = by_name.get("mkd")
    if mkd is None or "none" not in by_name:
        return ["targets: need the none and mkd rows"]
    lines = []
    diff, se = mkd[f"{metric} - none"], mkd["SE of diff"]
    met = diff >= 2 * se
    lines.append(f"MKD - none >= 2 SE: {'met' if met else 'missed'} "
                 f"({diff:+.2f} {metric}, 2 SE = {2 * se:.2f}"
                 + ("" if met else f", short by {2 * se - diff:.2f} {metric}") + ")")

    def at_least(target: str, other: Dict) -> str:
        margin = mkd[metric] - other[metric]
        return (f"MKD >= {target}: {'met' if margin >= 0 else 'missed'} (MKD {mkd[metric]:.2f}, "
                f"{other['method']} {other[metric]:.2f}, {margin:+.2f} {metric})")

    baselines = [by_name[m] for m in BASELINES if m in by_name]
    if baselines:
        lines.append(at_least(f"best of {'/'.join(r['method'] for r in baselines)}",
                              max(baselines, key=lambda row: row[metric])))
    lines += [at_least(f"{m} (a published recipe, its own row)", by_name[m])
              for m in RECIPES if m in by_name]
    closed = mkd["gap closed"]
    lines.append(f"MKD closes >= 30% of the gap: {'met' if closed >= 0.3 else 'missed'} "
                 f"({100 * closed:.1f}%" + ("" if closed >= 0.3 else
                                            f", short by {100 * (0.3 - closed):.1f} points")
                 + ")")
    return lines


def choose_factors(mean_score: Dict[str, Dict[float, float]],
                   base: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Per method, the factor of the best mean score (ties: the one nearest the grid's x1,
    ``base``)."""
    base = base or {}
    return {method: max(by_factor, key=lambda f: (by_factor[f],
                                                  -abs(math.log(f / base.get(method, 1.0)))))
            for method, by_factor in mean_score.items()}


def tuning_context(args, pair: str, teacher_dir: str, student_schedule: Sequence[str]) -> Dict:
    """What the tuned factors are valid for: the same pair, teacher and overrides, and the same
    configs (hashes) of the student and each tuned method at ``student_schedule``: an edited
    recipe, or another schedule, needs a new tuning."""
    methods = [m for m in PAIRS[pair].methods if m == "none" or m in LOSS_WEIGHTS]
    data = list(PAIRS[pair].overrides)
    configs = {m: runs.config_hash(config_file(args, m, pair), data + list(student_schedule))
               for m in methods}
    return {"pair": pair, "teacher": teacher_dir, "overrides": list(args.overrides),
            "configs": configs, "calibration": args.calibration}


def earlier_grid(path: str, context: Dict, tune_seeds: Sequence[int],
                 metric: str) -> Dict[str, Dict[float, float]]:
    """The mean scores per method and factor of an earlier ``--tune`` in ``path`` with the same
    context and tuning seeds (a grid to extend), else none."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        earlier = json.load(f)
    if earlier["context"] != context or earlier["tuning_seeds"] != list(tune_seeds):
        print(f"[benchmark] {path} was tuned with other options: replacing it", flush=True)
        return {}
    return {m: {float(k): v for k, v in d.items()}
            for m, d in earlier.get(f"mean_{metric}", {}).items()}


def tune(args, planned, rows: Sequence[Row], teacher, student_schedule,
         base: Dict[str, float]) -> List[Dict]:
    """Writes the chosen factors with the mean score of every grid point, this command's and
    an earlier ``--tune``'s with the same options (ties: nearest the grid's x1, ``base``);
    returns this command's grid as a table."""
    metric = TASKS[args.task].metric
    path = os.path.join(args.output_dir, TUNING_FILE)
    context = tuning_context(args, args.pair, teacher.output_dir, student_schedule)
    factor_of = {row.name: (row.method, row.factor) for row in rows}
    mean_score = earlier_grid(path, context, args.tune_seeds, metric)
    for name, seed_runs in planned.items():
        method, factor = factor_of[name]
        mean_score.setdefault(method, {})[factor] = statistics.mean(
            r.final_score() for r in seed_runs)
    chosen = choose_factors(mean_score, base)
    with open(path, "w") as f:
        json.dump({"factors": chosen, "tuning_seeds": list(args.tune_seeds),
                   f"mean_{metric}": {m: {repr(k): v for k, v in sorted(d.items())}
                                      for m, d in mean_score.items()},
                   "context": context}, f, indent=1)
    table = []
    for name, seed_runs in planned.items():
        method, factor = factor_of[name]
        scores = [r.final_score() for r in seed_runs]
        table.append({"method": name, "seeds": len(scores),
                      "diverged": sum(r.diverged for r in seed_runs),
                      metric: statistics.mean(scores),
                      f"{metric} std": statistics.stdev(scores) if len(scores) > 1 else math.nan,
                      "chosen": "yes" if chosen[method] == factor else ""})
    return table


def load_factors(args, teacher, student_schedule: Sequence[str]) -> Dict[str, float]:
    """The tuned factors of ``--tune`` (checked to fit this command; ``--factors-from``:
    another directory's, checked to fit the command that tuned them but for its pair and
    teacher), else x1 with a warning."""
    path = os.path.join(args.factors_from or args.output_dir, TUNING_FILE)
    if args.factors_from and not os.path.isfile(path):
        raise SystemExit(f"--factors-from {args.factors_from}: no {TUNING_FILE} there; run "
                         "--tune in that directory first")
    if not os.path.isfile(path):
        print(f"[benchmark] WARNING: no {path}: every method keeps its calibrated weights (x1), "
              "without the equal tuning budget. Run the same command with --tune first.",
              flush=True)
        return {}
    with open(path) as f:
        tuned = json.load(f)
    if args.factors_from:  # the options and configs as tuned, on the pair and teacher tuned on
        origin = tuned["context"]["pair"]
        context = tuning_context(args, origin, tuned["context"]["teacher"], student_schedule)
        print(f"[benchmark] the weights tuned on the {origin} pair, applied unchanged to the "
              f"{args.pair} pair", flush=True)
    else:
        context = tuning_context(args, args.pair, teacher.output_dir, student_schedule)
    if tuned["context"] != context:
        raise SystemExit(f"{path} was tuned for {tuned['context']}, this command is {context}: "
                         "rerun --tune with this command's options and configs (finished runs "
                         "are reused), or give this command the tuned options")
    # Ablations are experiments, which belong on the tuning seeds; the table reports.
    shared = sorted(set(tuned["tuning_seeds"]) & set(args.seeds))
    if shared and not args.ablations:
        raise SystemExit(f"seeds {shared} chose the weights ({path}) and cannot also report "
                         f"them: give --seeds without {tuned['tuning_seeds']}")
    factors = {m: float(f) for m, f in tuned["factors"].items()}
    rows = ({"mkd"} | {ablation(name)[0] for name in args.ablations} if args.ablations
            else set(args.methods))
    untuned = sorted(m for m in rows if m in LOSS_WEIGHTS and m not in factors)
    if untuned:
        raise SystemExit(f"{path} has no tuned weights for {untuned}: run --tune --methods "
                         f"{' '.join(untuned)} with this command's options first")
    print(f"[benchmark] tuned weights from {path} (seeds {tuned['tuning_seeds']}): "
          + ", ".join(f"{m} x{f:g}" for m, f in factors.items()), flush=True)
    return factors


def probe_config(config_file, overrides, batches):
    """``mkd.probe.probe`` of a run's config: its losses at initialisation (teacher loaded, no
    update) and the gradients they send into the student, averaged over the first ``batches``
    training batches; every config sees the same batches."""
    import mkd.probe

    cfg = runs.load_config(config_file, list(overrides) + ["dataloader.train.num_workers=0"])
    return mkd.probe.probe(cfg, batches)


def probe(args, planned, teacher):
    """A row per distilled method at initialisation: its task and distillation losses, the
    ratio of the gradients both send into the student's FPN outputs, and two calibration rules
    as factors on its weights. "factor to MKD's ratio" gives it MKD's distillation-to-task loss
    ratio (the benchmark's calibration: every method starts with the same pull on the loss);
    "factor to gradient ratio 1" makes its distillation's gradient at the FPN equal the task's
    (the same pull where the student feels it: loss terms of different shapes pass through
    different adapters, so equal losses can send very different gradients)."""
    rows = []
    for name, seed_runs in planned.items():
        if name == "none":
            continue
        measured = probe_config(seed_runs[0].config_file, seed_runs[0].overrides, args.probe)
        rows.append({"method": name, "task loss": measured["task_loss"],
                     "distillation loss": measured["distillation_loss"],
                     "ratio": measured["loss_ratio"],
                     "FPN gradient ratio": measured["fpn_grad_ratio"],
                     "factor to gradient ratio 1": 1.0 / measured["fpn_grad_ratio"]})
        print(f"  {name}: {measured['losses']}", flush=True)
    reference = next((r["ratio"] for r in rows if r["method"].startswith("mkd")), math.nan)
    for row in rows:
        row["factor to MKD's ratio"] = reference / row["ratio"]
    path = os.path.join(args.output_dir, CALIBRATION_FILE)
    calibration = {"teacher": teacher.output_dir, "gradient": {}}
    if os.path.isfile(path):  # another subset of methods probed with this teacher: kept
        with open(path) as f:
            previous = json.load(f)
        if previous["teacher"] == teacher.output_dir:
            calibration = previous
    for row in rows:
        calibration["gradient"][row["method"].split("[")[0]] = row["factor to gradient ratio 1"]
    os.makedirs(args.output_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(calibration, f, indent=1)
    return rows


def mean_curves(planned, metric: str):
    """``metric`` against iteration per method, averaged over its seeds (they share evaluation
    points)."""
    curves = {}
    for name, seed_runs in planned.items():
        per_seed = [r.evaluations() for r in seed_runs if not r.diverged]
        if not per_seed:
            continue
        curves[f"{name} (mean of {len(per_seed)})"] = [
            {"iteration": points[0]["iteration"],
             metric: statistics.mean(p[metric] for p in points)}
            for points in zip(*per_seed)
        ]
    return curves


def predictions_figure(args, teacher, planned, rows: Sequence[Row], tag: str) -> str:
    """``tools/visualize_sem_seg.py``'s grid of the teacher and the first seed of the student and
    student + MKD rows (those of ``FIGURE_COLUMNS`` the table has), each titled with its mIoU."""
    import visualize_sem_seg

    shown = [("teacher", teacher)] + [(FIGURE_COLUMNS[row.method], planned[row.name][0])
                                      for row in rows if row.method in FIGURE_COLUMNS]
    metric = TASKS[args.task].metric
    models = {
        f"{title} ({run.evaluations()[-1][metric]:.1f} {metric})": (
            runs.load_config(run.config_file, run.overrides),
            os.path.join(run.output_dir, "model_final.pth"))
        for title, run in shown}
    path = os.path.join(args.output_dir, f"predictions{tag}.png")
    visualize_sem_seg.figure(models, path)
    return path


def smoke_dataset(args):
    """A few generated images of the pair's dataset, inside the output directory."""
    os.environ["MKD_DATASETS"] = os.path.join(args.output_dir, "datasets")
    from mkd.data import GENERATORS, builtin_root, register_builtin

    dataset = PAIRS[args.pair].dataset
    if not os.path.isdir(builtin_root(dataset)):
        GENERATORS[dataset].generate_dataset(builtin_root(dataset), num_train=8, num_val=4,
                                             image_size=128, workers=1)
    register_builtin(dataset=dataset)  # this process registered the default root on import


def main(argv=None):
    args = parse_args(argv)
    pair, task = PAIRS[args.pair], TASKS[args.task]
    args.teacher_iter = args.teacher_iter or pair.teacher_iter
    args.student_iter = args.student_iter or pair.student_iter
    args.teacher_cache = runs.teacher_cache(args, args.output_dir)
    extra, student_score = [], []
    if args.smoke:
        smoke_dataset(args)
        args.teacher_iter = args.student_iter = SMOKE_ITER
        extra = ["dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
                 "dataloader.test.num_workers=0"]
        student_score = list(task.smoke_score)
    evaluations = 1 if args.smoke else 3

    def schedule(iterations):  # None: the config's own schedule
        return runs.schedule(iterations, evaluations) if iterations else []

    bottom_up = pretrained_bottom_up(args)
    teacher_bottom_up = (pretrained_bottom_up(args, pair.teacher_pretraining_config)
                         if pair.teacher_pretraining_config else bottom_up)
    teacher = runs.teacher_run(args.teacher_cache,
                               list(pair.overrides) + schedule(args.teacher_iter) + extra
                               + student_score
                               + start_from(teacher_bottom_up, distilled=False),
                               config_file=runs.config_path(pair.teacher, pair.folder),
                               task=task.evaluation)
    if teacher.finished:
        print(f"[benchmark] reusing the cached teacher {teacher.output_dir}", flush=True)
    else:
        print(f"[benchmark] training the teacher {teacher.config_file} -> "
              f"{teacher.output_dir}", flush=True)
        runs.launch([teacher], jobs=1, threads=max(1, os.cpu_count() or 1), prefix="  ")

    student_schedule = schedule(args.student_iter) + extra
    base = calibration_factors(args, teacher) if args.tune else {}
    if args.probe:  # the calibrated weights themselves
        rows = table_rows(args, {})
    elif args.tune:
        rows = tuning_rows(args, base)
    else:
        factors = load_factors(args, teacher, student_schedule)
        rows = ablation_rows(args, factors) if args.ablations else table_rows(args, factors)
    planned = student_runs(args, rows, teacher, student_schedule, student_score, bottom_up)
    if args.probe:
        table = probe(args, planned, teacher)
        text = runs.format_table(table, PROBE_COLUMNS)
        print(text, flush=True)
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "probe.md"), "a") as f:
            f.write(f"{args.pair} {' '.join(args.overrides)}\n{text}\n\n")
        return table

    todo = unfinished_seed_by_seed(planned)
    print(f"[benchmark] {len(todo)} of {sum(map(len, planned.values()))} student runs to train, "
          f"{args.jobs} at a time (finished runs are reused)", flush=True)
    runs.launch(todo, jobs=args.jobs, threads=1, prefix="  ")

    if args.tune:
        table = tune(args, planned, rows, teacher, student_schedule, base)
        text = runs.format_table(table, tune_columns(task))
        tag, notes = "_tuning", [f"tuning seeds {args.tune_seeds}; chosen factors in "
                                 f"{os.path.join(args.output_dir, TUNING_FILE)}"]
    else:
        table = summarize(planned, teacher, rows, task.metrics)
        text = runs.format_table(table, columns(task))
        tag = "_ablations" if args.ablations else f"_{args.tag}" if args.tag else ""
        notes = [] if args.ablations else verdicts(table, task.metric)
    with open(os.path.join(args.output_dir, f"results{tag}.md"), "w") as f:
        f.write(text + "\n\n" + "\n".join(f"- {line}" for line in notes) + "\n")
    with open(os.path.join(args.output_dir, f"results{tag}.json"), "w") as f:
        json.dump({"rows": table, "notes": notes, "args": vars(args)}, f, indent=1)
    figure = os.path.join(args.output_dir, f"{task.metric.lower()}_vs_iteration{tag}.png")
    runs.plot_curves(mean_curves(planned, task.metric), figure,
                     f"students ({args.pair}), mean over seeds", task.metric)
    if args.task == "sem_seg" and not args.tune and not args.ablations:
        predictions_figure(args, teacher, planned, rows, tag)
    print(text + "\n" + "\n".join(notes), flush=True)
    return table


if __name__ == "__main__":
    main()
