#!/usr/bin/env python
"""Distillation benchmark on the built-in dataset: one teacher (RetinaNet R50), one student
(RetinaNet R18), one schedule; a row per method (none, mimic, FGD, MGD, MKD) over seeds.

Reports mean ± std of box AP, the share of the teacher-student gap closed, and the training
time per iteration relative to no distillation. Extra ``path.key=value`` arguments apply to
every distilled run, with ``--tag`` naming them (ablations), e.g.::

    python tools/benchmark_distill.py --seeds 0 1 2 --student-iter 300
    python tools/benchmark_distill.py --methods mkd --tag ratio0.75 model.masker.mask_ratio=0.75

``--ablations`` trains, instead of the methods, MKD's variants of ``ABLATIONS`` (the paper's
open questions) beside none and MKD at its defaults, and writes ``results_ablations.md``.

``--probe N`` calibrates instead: it prints each distilled method's distillation and task losses
at initialisation (trained teacher, N batches, no update), with the factor on the method's loss
weights that gives it MKD's initial distillation-to-task ratio.

``--smoke`` runs every row for a few iterations on a few generated images (for CI).
"""
import argparse
import json
import math
import os
import re
import statistics

import runs  # tools/runs.py: this script's directory is on sys.path

METHODS = {
    "none": "retinanet_R18_scratch",
    "mimic": "retinanet_R50_to_R18_mimic",
    "fgd": "retinanet_R50_to_R18_fgd",
    "mgd": "retinanet_R50_to_R18_mgd",
    "mkd": "retinanet_R50_to_R18_mkd",
}
#: MKD's open questions: one row each, every other setting at the defaults (configs/common/mkd.py).
ABLATIONS = {
    "single masked pass": ["model.task_pass=masked"],
    "no global loss": ["model.distiller.global_loss=null"],
    "hidden positions only": ["model.distiller.feature_loss.positions=hidden"],
    "mask ratio 0.75": ["model.masker.mask_ratio=0.75"],
    "decoder depth 4": ["model.distiller.decoder.depth=4"],
}
SMOKE_ITER = 5  # Detectron2 times iterations after the third
# A five-iteration teacher has unsettled BN statistics: its raw P6/P7 features reach hundreds,
# and FGD's and MGD's raw-feature losses (weighted for a trained teacher) would diverge.
SMOKE_OVERRIDES = {
    "fgd": ["model.distiller.alpha_fg=1e-9", "model.distiller.beta_bg=1e-9",
            "model.distiller.lambda_global=1e-9"],
    "mgd": ["model.distiller.alpha=1e-9"],
}
TASK_LOSSES = ("loss_cls", "loss_box_reg")
PROBE_COLUMNS = ["method", "task loss", "distillation loss", "ratio", "factor to MKD's ratio"]
COLUMNS = ["method", "seeds", "AP", "AP std", "AP50", "AP75", "APs", "APm", "APl",
           "gap closed", "time/iter vs none"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    runs.add_schedule_arguments(parser, teacher_iter=900, student_iter=150)
    parser.add_argument("--output-dir", default="./output/benchmark_distill")
    parser.add_argument("--tag", default="", help="names the extra overrides' variant")
    parser.add_argument("--ablations", action="store_true",
                        help="MKD's variants of ABLATIONS instead of the methods")
    parser.add_argument("--smoke", action="store_true", help="a few iterations on 8 images")
    parser.add_argument("--probe", type=int, default=0, metavar="N",
                        help="only measure each method's initial losses over N batches")
    parser.add_argument("overrides", nargs="*", help="path.key=value for the distilled runs")
    return parser.parse_args(argv)


def variants(args):
    """(row name, method, extra overrides) of every row to train."""
    if args.ablations:
        return [("none", "none", []), ("mkd", "mkd", list(args.overrides))] + [
            (f"mkd[{tag}]", "mkd", list(args.overrides) + extra)
            for tag, extra in ABLATIONS.items()]
    return [(method + (f"[{args.tag}]" if args.tag and method != "none" else ""), method,
             [] if method == "none" else list(args.overrides)) for method in args.methods]


def student_runs(args, teacher, base_overrides, student_score):
    """One run per (row, seed): the method's config, its seed, the common schedule."""
    planned = {}
    for name, method, extra in variants(args):
        for seed in args.seeds:
            overrides = base_overrides + [f"train.seed={seed}"]
            if method == "none":
                overrides += student_score
            else:
                overrides += [f"model.teacher_weights={teacher.output_dir}/model_final.pth"]
                overrides += [s.replace("model.", "model.student.", 1) for s in student_score]
                overrides += extra
                if args.smoke:
                    overrides += SMOKE_OVERRIDES.get(method, [])
                if method == "mkd":
                    overrides.append(f"model.masker.seed={seed}")
            config_file = runs.config_path(METHODS[method])
            digest = runs.config_hash(config_file, overrides)  # a changed config is a new run
            # Hydra's override grammar (train.output_dir=...) reserves brackets and spaces.
            folder = re.sub(r"[^\w.-]+", "_", name).strip("_")
            directory = os.path.join(args.output_dir, folder, f"seed{seed}-{digest}")
            planned.setdefault(name, []).append(
                runs.Run(f"{name} seed {seed}", config_file, directory, overrides))
    return planned


def summarize(planned, teacher):
    """A row per method from each run's final COCO evaluation."""
    teacher_ap = teacher.evaluations()[-1]["AP"]
    finals = {name: [r.evaluations()[-1] for r in rs] for name, rs in planned.items()}
    speed = {name: statistics.median(r.seconds_per_iter() for r in rs)
             for name, rs in planned.items()}
    none_ap = statistics.mean(e["AP"] for e in finals["none"]) if "none" in finals else math.nan
    rows = []
    for name, evaluations in finals.items():
        ap = [e["AP"] for e in evaluations]
        row = {"method": name, "seeds": len(ap), "AP": statistics.mean(ap),
               "AP std": statistics.stdev(ap) if len(ap) > 1 else math.nan}
        for k in ("AP50", "AP75", "APs", "APm", "APl"):
            row[k] = statistics.mean(e[k] for e in evaluations)
        gap = teacher_ap - none_ap
        row["gap closed"] = (row["AP"] - none_ap) / gap if gap else math.nan
        row["time/iter vs none"] = speed[name] / speed.get("none", math.nan)
        rows.append(row)
    rows.append({"method": "teacher R50", "seeds": 1, "AP": teacher_ap,
                 **{k: teacher.evaluations()[-1][k] for k in ("AP50", "AP75", "APs", "APm",
                                                              "APl")}})
    return rows


def initial_losses(config_file, overrides, batches):
    """A config's training losses at initialisation (teacher loaded, no update), averaged over
    the first ``batches`` training batches; every config sees the same batches."""
    import torch
    from detectron2.config import LazyConfig, instantiate
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage

    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file),
                                     list(overrides) + ["dataloader.train.num_workers=0"])
    seed_all_rng(0)
    model = instantiate(cfg.model).to(cfg.train.device).train()
    loader = iter(instantiate(cfg.dataloader.train))
    totals = {}
    with torch.no_grad(), EventStorage():
        for _ in range(batches):
            for key, value in model(next(loader)).items():
                totals[key] = totals.get(key, 0.0) + float(value) / batches
    return totals


def probe(args, planned):
    """A row per distilled method: its task and distillation losses at initialisation and the
    factor on its weights that gives it MKD's distillation-to-task ratio (the benchmark's
    calibration rule: every method starts with the same pull towards the teacher)."""
    rows = []
    for name, seed_runs in planned.items():
        if name == "none":
            continue
        losses = initial_losses(seed_runs[0].config_file, seed_runs[0].overrides, args.probe)
        task = sum(losses[k] for k in TASK_LOSSES)
        distill = sum(v for k, v in losses.items() if k not in TASK_LOSSES)
        rows.append({"method": name, "task loss": task, "distillation loss": distill,
                     "ratio": distill / task})
        print(f"  {name}: {losses}", flush=True)
    reference = next((r["ratio"] for r in rows if r["method"].startswith("mkd")), math.nan)
    for row in rows:
        row["factor to MKD's ratio"] = reference / row["ratio"]
    return rows


def mean_curves(planned):
    """AP against iteration per method, averaged over its seeds (they share evaluation points)."""
    curves = {}
    for name, seed_runs in planned.items():
        per_seed = [r.evaluations() for r in seed_runs]
        curves[f"{name} (mean of {len(per_seed)})"] = [
            {"iteration": points[0]["iteration"],
             "AP": statistics.mean(p["AP"] for p in points)}
            for points in zip(*per_seed)
        ]
    return curves


def main(argv=None):
    args = parse_args(argv)
    args.output_dir = os.path.abspath(args.output_dir)
    extra, student_score = [], []
    args.teacher_cache = runs.teacher_cache(args, args.output_dir)
    if args.smoke:
        os.environ["MKD_DATASETS"] = os.path.join(args.output_dir, "dataset")
        args.teacher_iter = args.student_iter = SMOKE_ITER
        extra = ["dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
                 "dataloader.test.num_workers=0"]
        student_score = ["model.test_score_thresh=0.0"]  # two-iteration models score low
        from mkd.data import builtin_root, generate_dataset

        if not os.path.isdir(builtin_root()):
            generate_dataset(builtin_root(), num_train=8, num_val=4, image_size=128, workers=1)

    evaluations = 1 if args.smoke else 3
    teacher = runs.teacher_run(args.teacher_cache, runs.schedule(args.teacher_iter, evaluations)
                               + extra + student_score)
    if teacher.finished:
        print(f"[benchmark] reusing the cached teacher {teacher.output_dir}", flush=True)
    else:
        print(f"[benchmark] training the teacher for {args.teacher_iter} iterations", flush=True)
        runs.launch([teacher], jobs=1, threads=max(1, os.cpu_count() or 1), prefix="  ")

    planned = student_runs(args, teacher, runs.schedule(args.student_iter, evaluations) + extra,
                           student_score)
    if args.probe:
        rows = probe(args, planned)
        table = runs.format_table(rows, PROBE_COLUMNS)
        print(table, flush=True)
        with open(os.path.join(args.output_dir, "probe.md"), "a") as f:
            f.write(f"{' '.join(args.overrides)}\n{table}\n\n")
        return rows
    todo = [r for rs in planned.values() for r in rs if not r.finished]
    print(f"[benchmark] {len(todo)} of {sum(map(len, planned.values()))} student runs to train, "
          f"{args.jobs} at a time (finished runs are reused)", flush=True)
    runs.launch(todo, jobs=args.jobs, threads=1, prefix="  ")

    rows = summarize(planned, teacher)
    table = runs.format_table(rows, COLUMNS)
    tag = "_ablations" if args.ablations else f"_{args.tag}" if args.tag else ""
    with open(os.path.join(args.output_dir, f"results{tag}.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.output_dir, f"results{tag}.json"), "w") as f:
        json.dump({"rows": rows, "args": vars(args)}, f, indent=1)
    figure = os.path.join(args.output_dir, f"ap_vs_iteration{tag}.png")
    runs.plot_curves(mean_curves(planned), figure,
                     f"students, {args.student_iter} iterations: box AP (mean over seeds)")
    print(table, flush=True)
    return rows


if __name__ == "__main__":
    main()
