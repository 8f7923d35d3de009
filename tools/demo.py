#!/usr/bin/env python
"""``make demo``: MKD end to end on the built-in dataset, on CPU.

1. checks the environment (``make demo`` installed it);
2. generates the built-in dataset if missing;
3. trains the teacher, or reuses a cached one whose config hash matches: by default a RetinaNet
   R18 from scratch on its config's 300 iterations, the strongest teacher that trains within the
   demo's 15 minutes on 2 CPU cores (deeper ResNets learn more slowly from scratch; ``--teacher
   50 --teacher-iter 900 --student-iter 150`` is the distillation benchmark's R50 pair and
   schedules);
4. trains the student (RetinaNet R18) without distillation and with MKD, on one shorter schedule,
   side by side;
5. evaluates all three with ``COCOEvaluator`` (during and at the end of training);
6. prints the table and writes AP against iteration as a PNG.

``--smoke`` runs the same stages for five iterations on a few generated images (for CI).
"""
import argparse
import math
import os
import time

import runs  # tools/runs.py: this script's directory is on sys.path

COLUMNS = ["run", "iterations", *runs.METRICS, "s/iter"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="./demo_output")
    parser.add_argument("--teacher", type=int, choices=[18, 50], default=18,
                        help="the teacher's ResNet depth (RetinaNet from scratch)")
    runs.add_schedule_arguments(parser, teacher_iter=300, student_iter=80)
    parser.add_argument("--smoke", action="store_true", help="5 iterations on 8 images")
    return parser.parse_args(argv)


START = time.time()  # the demo's clock: stage lines and the total


def stage(number, text):
    """A progress line, with the time since the demo started."""
    elapsed = int(time.time() - START)
    print(f"[demo {number}/6, {elapsed // 60}:{elapsed % 60:02d}] {text}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)

    import detectron2
    import torch

    stage(1, f"environment: torch {torch.__version__}, detectron2 {detectron2.__version__}, "
             f"{torch.get_num_threads()} CPU threads")

    from mkd.data import builtin_root, ensure_builtin_dataset, generate_dataset

    extra, detector, mkd = [], [], []
    args.teacher_cache = runs.teacher_cache(args, out)
    if args.smoke:
        os.environ["MKD_DATASETS"] = os.path.join(out, "dataset")
        args.teacher_iter = args.student_iter = 5  # Detectron2 times iterations after the 3rd
        extra = ["dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
                 "dataloader.test.num_workers=0"]
        # Five-iteration models score below the default threshold: keep their boxes.
        detector, mkd = ["model.test_score_thresh=0.0"], ["model.student.test_score_thresh=0.0"]
    stage(2, f"built-in dataset in {builtin_root()}")
    if args.smoke:
        if not os.path.isdir(builtin_root()):
            generate_dataset(builtin_root(), num_train=8, num_val=4, image_size=128, workers=1)
    else:
        ensure_builtin_dataset()

    evaluations = 1 if args.smoke else 3
    # The teacher is evaluated once, at its end: the figure is about the students' curves, and
    # each evaluation costs 15-25 s of the demo's 15 minutes.
    teacher = runs.teacher_run(args.teacher_cache,
                               runs.schedule(args.teacher_iter, 1) + extra + detector,
                               depth=args.teacher)
    if teacher.finished:
        stage(3, f"teacher: reusing the cached {teacher.output_dir} (config hash matches)")
    else:
        threads = max(1, os.cpu_count() or 1)
        stage(3, f"teacher: training RetinaNet R{args.teacher} for {args.teacher_iter} "
                 f"iterations on {threads} threads")
        runs.launch([teacher], jobs=1, threads=threads, prefix="  ")

    student_schedule = runs.schedule(args.student_iter, evaluations) + extra
    students = [
        runs.Run("student R18", runs.config_path("retinanet_R18_scratch"),
                 os.path.join(out, "student"), student_schedule + detector),
        runs.Run("student R18 + MKD", runs.config_path(f"retinanet_R{args.teacher}_to_R18_mkd"),
                 os.path.join(out, "student_mkd"), student_schedule + mkd
                 + [f"model.teacher_weights={teacher.output_dir}/model_final.pth"]),
    ]
    stage(4, f"students: RetinaNet R18 without and with MKD, {args.student_iter} iterations "
             f"each, {args.jobs} at a time")
    runs.launch(students, jobs=args.jobs, threads=1, prefix="  ")

    stage(5, "evaluation: COCOEvaluator results of every run")
    rows = []
    for run in [teacher, *students]:
        final = run.evaluations()[-1]
        rows.append({"run": run.name, "iterations": final["iteration"],
                     **{k: float(final[k]) for k in runs.METRICS},
                     "s/iter": float(run.seconds_per_iter())})
    table = runs.format_table(rows, COLUMNS)
    figure = os.path.join(out, "ap_vs_iteration.png")
    runs.plot_curves({r.name: r.evaluations() for r in [teacher, *students]}, figure,
                     "built-in dataset: box AP during training")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n")
    stage(6, f"results (also in {out}/results.md; figure {figure}), "
             f"total {time.time() - START:.0f} s:\n{table}")
    # APs/APm/APl are undefined (nan) where the val set has no object of that size.
    if not all(math.isfinite(r[k]) for r in rows for k in ("AP", "AP50", "AP75")):
        raise SystemExit("some AP values are not finite: see the runs' train.log")
    return rows


if __name__ == "__main__":
    main()
