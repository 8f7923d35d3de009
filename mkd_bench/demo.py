"""``make demo`` (``python tools/shapes_demo.py``): MKD end to end on the shapes proxy
(``configs/shapes/``), on CPU.

1. checks the environment (``make demo`` installed it);
2. generates the shapes dataset if missing;
3. pre-trains the R18 bottom-up on crops of the train split (``tools/pretrain_backbone.py``),
   or finds it in its cache (``output/pretrained/``);
4. trains the teacher from that bottom-up, or reuses a cached one whose config hash matches;
5. trains the student from the same bottom-up, without distillation and with MKD (at the loss
   weights the benchmark tuned on this proxy), on one shorter schedule, side by side (one thread
   each);
6. evaluates all three with ``COCOEvaluator`` (during and at the end of training);
7. prints the table and writes AP against iteration as a PNG.

The configs are the distillation benchmark's shapes pair (``tools/benchmark_distill.py``) and
its pretraining (600 iterations, found in its cache when the benchmark ran first). The
benchmark's teacher and student schedules do not fit the demo's 15 minutes on 2 CPU cores
(teacher 600 iterations 10.4 min on one thread, students 300 at 1-1.9 s/iter), so the teacher
trains 300 iterations (43.2 AP, far ahead of the students) and the students 150, on the steep
part of their curve, where a teacher's help can show: 11 min 59 s on a fresh clone, measured.
Each is an option; ``--teacher-iter 600 --student-iter 300`` runs the benchmark's schedules
(about 18 minutes at the measured s/iter).

``--smoke`` runs the same stages for a few iterations on a few generated images (for CI).
"""
import argparse
import json
import math
import os
import time

from mkd_bench import pretrain, runs
from mkd_bench.pairs import PAIRS, SMOKE_ITER, SMOKE_PRETRAINING
from mkd_bench.plan import scaled_weights, start_from

COLUMNS = ["run", "iterations", *runs.METRICS, "s/iter"]
PAIR = PAIRS["shapes"]
#: MKD's loss weights on this proxy: the factor the benchmark's tuning chose over the config's
#: calibrated ones (docs/benchmark.md; the table's MKD row), so the demo shows the table's MKD.
MKD_FACTOR = 14.8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="./demo_output")
    parser.add_argument("--pretrain-iter", type=int, default=pretrain.Settings().iters,
                        help="iterations of the bottom-up's pretraining")
    runs.add_schedule_arguments(parser, teacher_iter=300, student_iter=150)
    parser.add_argument("--seed", type=int, default=0,
                        help="the students' seed: both see the same batches")
    parser.add_argument("--mkd-factor", type=float, default=MKD_FACTOR,
                        help="on MKD's loss weights (default: the benchmark's tuned factor)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_ITER} iterations on 8 images")
    return parser.parse_args(argv)


START = time.time()  # the demo's clock: stage lines and the total
STAGES = 7


def stage(number, text):
    """A progress line, with the time since the demo started."""
    elapsed = int(time.time() - START)
    print(f"[demo {number}/{STAGES}, {elapsed // 60}:{elapsed % 60:02d}] {text}", flush=True)


def prepare_dataset(smoke: bool, out: str) -> None:
    """The shapes dataset: the default one (generated where missing), or with ``smoke`` a few
    images inside ``out``, registered in this process too (pretraining reads it here)."""
    from mkd_bench.datasets import (
        GENERATORS,
        builtin_root,
        ensure_builtin_dataset,
        register_builtin,
    )

    if smoke:
        os.environ["MKD_DATASETS"] = os.path.join(out, "datasets")  # and the runs' subprocesses
    root = builtin_root(PAIR.dataset)
    stage(2, f"shapes dataset in {root}")
    if not smoke:
        ensure_builtin_dataset(root, dataset=PAIR.dataset)
    elif not os.path.isdir(root):
        GENERATORS[PAIR.dataset].generate_dataset(root, num_train=8, num_val=4, image_size=128,
                                                  workers=1)
    register_builtin(dataset=PAIR.dataset)  # at $MKD_DATASETS: an earlier registration may not be


def pretrained_bottom_up(args, out: str) -> str:
    """The checkpoint of ``tools/pretrain_backbone.py`` at the demo's settings (cached by their
    hash); linked as ``<out>/pretrained_R18.pth``, not at the configs' default link, which keeps
    pointing at the benchmark's pretraining whatever ``--pretrain-iter`` says."""
    from detectron2.utils.logger import setup_logger

    setup_logger(name="mkd.pretrain")  # its progress: minutes on a first demo
    settings = pretrain.Settings(
        **SMOKE_PRETRAINING if args.smoke else dict(iters=args.pretrain_iter))
    root = (os.path.join(out, "pretrained") if args.smoke
            else os.path.abspath(pretrain.DEFAULT_OUTPUT_ROOT))
    stage(3, f"bottom-up: R18 pretrained on crops of the train split for {settings.iters} "
             f"iterations (cached by its settings in {root})")
    path = pretrain.pretrain(runs.config_path(PAIR.methods["none"], PAIR.folder),
                                      settings, root, os.path.join(out, "pretrained_R18.pth"))
    with open(os.path.join(os.path.dirname(path), "accuracy.json")) as f:
        held_out = json.load(f)["held_out_accuracy"]
    print(f"  {path}: held-out crop accuracy "
          f"{'-' if held_out is None else f'{held_out:.3f}'}", flush=True)
    return path


def main(argv=None):
    args = parse_args(argv)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)

    import detectron2
    import torch

    stage(1, f"environment: torch {torch.__version__}, detectron2 {detectron2.__version__}, "
             f"{torch.get_num_threads()} CPU threads")

    extra, score, student_score = [], [], []
    args.teacher_cache = runs.teacher_cache(args, out)
    if args.smoke:
        args.teacher_iter = args.student_iter = SMOKE_ITER
        extra = ["dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
                 "dataloader.test.num_workers=0"]
        # Five-iteration models score below the default threshold: keep their boxes.
        score = ["model.test_score_thresh=0.0"]
        student_score = ["model.student.test_score_thresh=0.0"]
    prepare_dataset(args.smoke, out)
    bottom_up = pretrained_bottom_up(args, out)

    evaluations = 1 if args.smoke else 3
    # The teacher is evaluated once, at its end: the figure is about the students' curves, and
    # each evaluation costs about 15 s of the demo's 15 minutes.
    teacher = runs.teacher_run(args.teacher_cache,
                               runs.schedule(args.teacher_iter, 1) + extra + score
                               + start_from(bottom_up, distilled=False),
                               config_file=runs.config_path(PAIR.teacher, PAIR.folder))
    if teacher.finished:
        stage(4, f"teacher: reusing the cached {teacher.output_dir} (config hash matches)")
    else:
        threads = max(1, os.cpu_count() or 1)
        stage(4, f"teacher: training RetinaNet R18 for {args.teacher_iter} iterations on "
                 f"{threads} threads")
        runs.launch([teacher], jobs=1, threads=threads, prefix="  ")

    student_schedule = (runs.schedule(args.student_iter, evaluations) + extra
                        + [f"train.seed={args.seed}"])
    mkd_config = runs.config_path(PAIR.methods["mkd"], PAIR.folder)
    students = [
        runs.Run("student", runs.config_path(PAIR.methods["none"], PAIR.folder),
                 os.path.join(out, "student"),
                 student_schedule + score + start_from(bottom_up, distilled=False)),
        runs.Run("student + MKD", mkd_config, os.path.join(out, "student_mkd"),
                 student_schedule + student_score + start_from(bottom_up, distilled=True)
                 + [f"model.teacher_weights={teacher.output_dir}/model_final.pth"]
                 + scaled_weights(mkd_config, [], "mkd", args.mkd_factor)),
    ]
    stage(5, f"students: RetinaNet R18 without and with MKD, {args.student_iter} iterations "
             f"each, {args.jobs} at a time")
    runs.launch(students, jobs=args.jobs, threads=1, prefix="  ")

    stage(6, "evaluation: COCOEvaluator results of every run")
    rows = []
    for run in [teacher, *students]:
        final = run.evaluations()[-1]
        rows.append({"run": run.name, "iterations": final["iteration"],
                     **{k: float(final[k]) for k in runs.METRICS},
                     "s/iter": float(run.seconds_per_iter())})
    table = runs.format_table(rows, COLUMNS)
    figure = os.path.join(out, "ap_vs_iteration.png")
    runs.plot_curves({r.name: r.evaluations() for r in [teacher, *students]}, figure,
                     "shapes proxy: box AP during training")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n")
    stage(7, f"results (also in {out}/results.md; figure {figure}), "
             f"total {time.time() - START:.0f} s:\n{table}")
    # APs/APm/APl are undefined (nan) where the val set has no object of that size.
    if not all(math.isfinite(r[k]) for r in rows for k in ("AP", "AP50", "AP75")):
        raise SystemExit("some AP values are not finite: see the runs' train.log")
    return rows

