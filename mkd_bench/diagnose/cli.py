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
   afterwards): each level's term of the feature and global losses (the distiller's own
   per-level terms, weighted as in training), its positions, and the gradient norm it alone
   sends into the student's bottom-up network, as a share of the levels' sum; next to the task
   loss's gradient (clean pass) and the cosine between the task and distillation gradients.
   Mimic scores its adapter on the clean student with the same feature loss: the control for
   MKD's decoder.
4. **MKD's and mimic's gradients on one student** (E8, when the runs hold an MKD and a mimic
   run): both runs' trained distillers score each run's student weights in turn, on the batch
   of section 3; the gradient norms they send into the bottom-up network per level, and the
   cosines between MKD's and mimic's and with the task's.

    python tools/diagnose_mkd.py --runs output/benchmark_distill/shapes/mkd/seed0-* \\
        output/benchmark_distill/shapes/mimic/seed0-* \\
        output/benchmark_distill/shapes/none/seed0-* --images 32 --output-dir output/diagnose

A plain detector's run (the "none" row) is compared with the teacher of the first distilled run.
"""
import argparse
import copy
import os
from typing import List

from detectron2.config import LazyConfig

from mkd_bench.diagnose.directions import gradient_directions
from mkd_bench.diagnose.errors import reconstruction_errors, teacher_maps
from mkd_bench.diagnose.plots import plot_errors, plot_losses, plot_weighting
from mkd_bench.diagnose.records import (
    RunRecord,
    build_model,
    diagnosis_inputs,
    load_run,
    method_of,
    student_of,
    task_losses,
)
from mkd_bench.diagnose.report import write_report
from mkd_bench.diagnose.weighting import WEIGHED, level_weighting


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
    students = {}  # run name -> its student's weights (section 4)
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
        students[run.name] = copy.deepcopy(student_of(model).state_dict())
        del model
    compared = {m: next((r for r in distilled if r.method == m), None) for m in ("mkd", "mimic")}
    directions = None
    if all(compared.values()):
        print("[diagnose] MKD's and mimic's gradients on one student", flush=True)
        directions = gradient_directions(
            *(build_model(compared[m], args.seed, args.teacher_weights, args.device)
              for m in ("mkd", "mimic")), students, inputs)
    figures = {"losses": plot_losses(records, args.output_dir),
               "errors": [os.path.join(args.output_dir, "reconstruction_error.png")],
               "weighting": []}
    plot_errors(records, figures["errors"][0])
    weighted = [r for r in records if r.weighting]
    if weighted:
        figures["weighting"] = [os.path.join(args.output_dir, "level_weighting.png")]
        plot_weighting(weighted, figures["weighting"][0])
    print(write_report(records, args, mode, figures, directions), flush=True)
    print(f"Wrote {os.path.join(args.output_dir, 'report.md')} and "
          + ", ".join(os.path.basename(p) for ps in figures.values() for p in ps), flush=True)
    return records
