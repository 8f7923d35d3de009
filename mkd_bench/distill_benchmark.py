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
# This module is the command line; mkd_bench.plan holds the rows and their runs, mkd_bench.tuning
# the weight grid, the tuned factors and the probe, mkd_bench.tables the statistics and verdicts.
import argparse
import json
import os

from mkd_bench import plan, runs, tables, tuning
from mkd_bench.pairs import (
    ABLATIONS,
    CALIBRATION_FILE,
    FACTORS,
    METHODS,
    PAIRS,
    PROBE_COLUMNS,
    SMOKE_ITER,
    TASKS,
    TUNING_FILE,
)


def parse_args(argv=None):
    """The options, resolved: a pair implies its task and a task its default pair, the methods
    default to the pair's rows, and a departure from the pair's pretraining gets its own
    output directory (its tables and tuned weights apart from the pair's)."""
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


def smoke_dataset(args):
    """A few generated images of the pair's dataset, inside the output directory."""
    os.environ["MKD_DATASETS"] = os.path.join(args.output_dir, "datasets")
    from mkd_bench.datasets import GENERATORS, builtin_root, register_builtin

    dataset = PAIRS[args.pair].dataset
    if not os.path.isdir(builtin_root(dataset)):
        GENERATORS[dataset].generate_dataset(builtin_root(dataset), num_train=8, num_val=4,
                                             image_size=128, workers=1)
    register_builtin(dataset=dataset)  # this process registered the default root on import


def train_teacher(args, overrides, bottom_up: str) -> runs.Run:
    """The pair's teacher with ``overrides``, started from ``bottom_up`` (the students'
    pretrained one) unless the pair pretrains its teacher's own: found in its cache, else
    trained now on every core, since every student distils from it."""
    pair = PAIRS[args.pair]
    if pair.teacher_pretraining_config:
        bottom_up = plan.pretrained_bottom_up(args, pair.teacher_pretraining_config)
    teacher = runs.teacher_run(args.teacher_cache,
                               list(pair.overrides) + list(overrides)
                               + plan.start_from(bottom_up, distilled=False),
                               config_file=runs.config_path(pair.teacher, pair.folder),
                               task=TASKS[args.task].evaluation)
    if teacher.finished:
        print(f"[benchmark] reusing the cached teacher {teacher.output_dir}", flush=True)
    else:
        print(f"[benchmark] training the teacher {teacher.config_file} -> "
              f"{teacher.output_dir}", flush=True)
        runs.launch([teacher], jobs=1, threads=max(1, os.cpu_count() or 1), prefix="  ")
    return teacher


def write_probe(args, planned, teacher):
    """``--probe``'s table, printed and appended to ``probe.md``: one section per command, so
    the calibrations of other pairs and overrides stay side by side."""
    table = tuning.probe(args, planned, teacher)
    text = runs.format_table(table, PROBE_COLUMNS)
    print(text, flush=True)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "probe.md"), "a") as f:
        f.write(f"{args.pair} {' '.join(args.overrides)}\n{text}\n\n")
    return table


def write_results(args, planned, rows, teacher, student_schedule, base):
    """The finished runs' table (``--tune``: the grid, after writing the chosen factors) as
    ``results<tag>.md`` and ``.json``, their mean curves, and for a segmentation table the
    predictions; returns the table."""
    task = TASKS[args.task]
    if args.tune:
        table = tuning.tune(args, planned, rows, teacher, student_schedule, base)
        text = runs.format_table(table, tables.tune_columns(task))
        tag, notes = "_tuning", [f"tuning seeds {args.tune_seeds}; chosen factors in "
                                 f"{os.path.join(args.output_dir, TUNING_FILE)}"]
    else:
        table = tables.summarize(planned, teacher, rows, task.metrics)
        text = runs.format_table(table, tables.columns(task))
        tag = "_ablations" if args.ablations else f"_{args.tag}" if args.tag else ""
        notes = [] if args.ablations else tables.verdicts(table, task.metric)
    with open(os.path.join(args.output_dir, f"results{tag}.md"), "w") as f:
        f.write(text + "\n\n" + "\n".join(f"- {line}" for line in notes) + "\n")
    with open(os.path.join(args.output_dir, f"results{tag}.json"), "w") as f:
        json.dump({"rows": table, "notes": notes, "args": vars(args)}, f, indent=1)
    figure = os.path.join(args.output_dir, f"{task.metric.lower()}_vs_iteration{tag}.png")
    runs.plot_curves(tables.mean_curves(planned, task.metric), figure,
                     f"students ({args.pair}), mean over seeds", task.metric)
    if args.task == "sem_seg" and not args.tune and not args.ablations:
        tables.predictions_figure(args, teacher, planned, rows, tag)
    print(text + "\n" + "\n".join(notes), flush=True)
    return table


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

    bottom_up = plan.pretrained_bottom_up(args)
    teacher = train_teacher(args, schedule(args.teacher_iter) + extra + student_score, bottom_up)
    student_schedule = schedule(args.student_iter) + extra
    base = tuning.calibration_factors(args, teacher) if args.tune else {}
    if args.probe:  # the calibrated weights themselves
        rows = plan.table_rows(args, {})
    elif args.tune:
        rows = plan.tuning_rows(args, base)
    else:
        factors = tuning.load_factors(args, teacher, student_schedule)
        rows = (plan.ablation_rows(args, factors) if args.ablations
                else plan.table_rows(args, factors))
    planned = plan.student_runs(args, rows, teacher, student_schedule, student_score, bottom_up)
    if args.probe:
        return write_probe(args, planned, teacher)

    todo = plan.unfinished_seed_by_seed(planned)
    print(f"[benchmark] {len(todo)} of {sum(map(len, planned.values()))} student runs to train, "
          f"{args.jobs} at a time (finished runs are reused)", flush=True)
    runs.launch(todo, jobs=args.jobs, threads=1, prefix="  ")
    return write_results(args, planned, rows, teacher, student_schedule, base)
