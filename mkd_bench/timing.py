"""What MKD costs next to training the student alone: time per iteration and peak memory
(``tools/time_iteration.py``).

One run measures, side by side on one fixed synthetic batch (random images with a few random
boxes, classes and bitmasks, built once, so data loading never enters a timing):

(a) ``student``: training the student alone: its task losses, backward, optimizer step;
(b) ``teacher``: the teacher's *backbone* forward in eval mode under ``no_grad`` on its
    preprocessed batch: the teacher-side cost MKD pays (MKD never runs the teacher's heads);
(c) ``mkd``: one full MKD training iteration: ``FeatureDistillation.forward`` + backward +
    optimizer step;

and breaks (c) down by timing its pieces directly on the same batch and model: the student's
task pass (forward + backward of the task losses, unmasked); with ``task_pass="clean"`` the
masked pass's student backbone (forward + backward, timed unmasked); masking = mask drawing +
(masked minus unmasked backbone forward + backward of the same batch: the masked convolutions'
overhead); the teacher's backbone forward (with its preprocessing when the student's batch
cannot be reused); the decoder (``MKDDistiller.reconstruct``: forward + backward into the
features); the losses (its ``level_terms``, weighed and summed: forward + backward into the
decoder's output); the optimizer step, timed inside (c)'s own iterations; rest = (c) minus all
of these (glue). The pieces call the distiller's own steps, so they time the code (c) runs.
(c) runs with the distiller's per-level logging off; beside it, ``mkd_logging`` times the same
iteration logging every iteration (``log_period=1``: the per-level losses and the
reconstruction correlation ``r`` into Detectron2's event storage), reported as
``logging_over_mkd``; at a period of N the extra cost is 1/N of that ratio's excess over 1.
``masking`` and ``rest`` are differences of measurements and carry their noise: on a busy
machine either can come out below zero.

All times come from one process that runs (a), (b), (c) and the pieces in turn, iteration by
iteration ((a) trains the MKD model's own student with an optimizer of its own), so that the
load of other processes, and its drifts, hit every number alike. Each time is the median over
``--iters`` iterations after ``--warmup`` untimed ones (``time.perf_counter``;
``torch.cuda.synchronize`` around each call on CUDA): medians resist that load better than
means. On a shared CPU, OpenMP threads waiting for cores that other processes hold can make a
run several times slower: ``--threads 1`` gives steadier numbers, and the table prints the load
average before and after the run.

Peak memory comes from one fresh subprocess per row that builds only what the row runs (the
student, the teacher, or the whole MKD model) and runs two of its steps (the first allocates
the optimizer's state): on CUDA ``torch.cuda.max_memory_allocated``, on CPU the peak RSS
(``ru_maxrss``). ``peak MB`` is that peak minus the value before the model was built (after
the imports): weights, optimizer state and activations; the JSON output also holds the
absolute peak.

No weights are loaded, since timing does not depend on them: ``model.teacher_weights`` and
``model.student_weights`` are set to ``None`` (command-line overrides may set them again) and
the MKD model is marked ``teacher_loaded``. The optimizer is the config's with a learning rate of
1e-5: a step costs the same at any rate, and a small one keeps random models from diverging.

    python tools/time_iteration.py --config-file configs/builtin/retinanet_R50_to_R18_mkd.py \\
        --iters 10 --image-size 160 --threads 1 --json output/time_iteration.json [k=v ...]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

import torch
from detectron2.config import LazyConfig
from detectron2.utils.events import EventStorage

from mkd import MKDDistiller
from mkd_bench.timing_steps import (
    ROWS,
    Clock,
    measure_times,
    num_classes,
    row_step,
    synthetic_batch,
)

BREAKDOWN = {
    "student_task": "student task pass (fwd+bwd)",
    "second_pass": "masked pass: student backbone (fwd+bwd)",
    "masking": "masking (draw + masked-conv overhead)",
    "teacher_forward": "teacher backbone forward",
    "decoder": "decoder (fwd+bwd)",
    "losses": "losses (fwd+bwd)",
    "optimizer_step": "optimizer step",
    "rest": "rest (glue, noise)",
}
MEMORY_STEPS = 2  # the first step allocates the optimizer's state, the second runs with it
TARGET_SHARE = 0.15  # of an MKD iteration spent in masking + decoder + losses
LEARNING_RATE = 1e-5
SMOKE = {"iters": 2, "warmup": 1, "image_size": 64, "batch_size": 2}
DEFAULTS = {"iters": 10, "warmup": 2, "image_size": 160}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="an MKD LazyConfig")
    parser.add_argument("--iters", type=int, help=f"timed iterations ({DEFAULTS['iters']})")
    parser.add_argument("--warmup", type=int, help=f"untimed iterations ({DEFAULTS['warmup']})")
    parser.add_argument("--batch-size", type=int,
                        help="images per batch (the config's dataloader.train.total_batch_size)")
    parser.add_argument("--image-size", type=int,
                        help=f"side of the square images ({DEFAULTS['image_size']})")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="default: cuda when available")
    parser.add_argument("--threads", type=int,
                        help="CPU threads of torch (default: its own); 1 is steadier on a busy "
                        "machine")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="CI: " + ", ".join(f"{k}={v}" for k, v in SMOKE.items()))
    parser.add_argument("--row", choices=[*ROWS, "timing"], help=argparse.SUPPRESS)
    parser.add_argument("--row-output", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="config path.key=value")
    args = parser.parse_args(argv)
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, SMOKE[key] if args.smoke else default)
    if args.batch_size is None and args.smoke:
        args.batch_size = SMOKE["batch_size"]
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def load_config(args):
    cfg = LazyConfig.load(args.config_file)
    cfg.model.teacher_weights = None
    cfg.model.student_weights = None
    cfg = LazyConfig.apply_overrides(cfg, args.overrides)
    cfg.optimizer.lr = LEARNING_RATE
    if args.batch_size is None:
        args.batch_size = cfg.dataloader.train.total_batch_size
    return cfg


def memory_mb(device) -> float:
    """The peak so far: allocated GPU memory, or the process's RSS (``ru_maxrss``: KiB)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args):
    """One job in this process: the timings, or one row's peak memory over ``MEMORY_STEPS``
    steps; writes its numbers to ``--row-output``."""
    cfg = load_config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = memory_mb(args.device)
    torch.manual_seed(0)
    classes = num_classes(cfg.model.student)
    batch = synthetic_batch(args.batch_size, args.image_size, classes, args.device)
    clock = Clock(args.device)
    with EventStorage(0):
        if args.row == "timing":
            result = measure_times(cfg, args, batch, clock)
        else:
            step = row_step(args.row, cfg, args, batch, clock)
            for _ in range(MEMORY_STEPS):
                step()
            peak = memory_mb(args.device)
            result = {"peak_abs_mb": peak, "peak_mb": peak - before}
    with open(args.row_output, "w") as f:
        json.dump(result, f)


def run_in_subprocess(args, row, workdir):
    """A fresh interpreter per job: each memory row gets its own peak."""
    output = os.path.join(workdir, f"{row}.json")
    command = [
        sys.executable, "-m", "mkd_bench.timing", "--config-file", args.config_file,
        "--iters", str(args.iters), "--warmup", str(args.warmup),
        "--batch-size", str(args.batch_size), "--image-size", str(args.image_size),
        "--device", args.device, "--row", row, "--row-output", output,
        *(["--threads", str(args.threads)] if args.threads else []), *args.overrides,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"benchmark job {row!r} failed:\n{done.stderr[-4000:]}")
    with open(output) as f:
        return json.load(f)


def summarize(rows):
    """The breakdown's rest and the ratios asked of MKD."""
    mkd = rows["mkd"]
    parts = mkd["breakdown"]
    parts["rest"] = mkd["ms"] - sum(parts[k] for k in BREAKDOWN if k != "rest")
    distill = parts["masking"] + parts["decoder"] + parts["losses"]
    return {
        "mkd_over_student": mkd["ms"] / rows["student"]["ms"],
        "logging_over_mkd": mkd["logging_ms"] / mkd["ms"],
        "distill_share": distill / mkd["ms"],
        "target_share": TARGET_SHARE,
    }


def format_table(results) -> str:
    rows, parts, ratios = results["rows"], results["rows"]["mkd"]["breakdown"], results["ratios"]
    lines = [
        f"MKD benchmark: {results['config']} on {results['device']}, batch "
        f"{results['batch_size']} x {results['image_size']}x{results['image_size']} px, median of "
        f"{results['iters']} iterations after {results['warmup']} warm-up, "
        f"threads: {results['threads']}, load average {results['load_average'][0]:.1f} -> "
        f"{results['load_average'][1]:.1f}",
        f"{'row':<48}{'ms/iter':>10}{'peak MB':>10}",
    ]
    for key, label in ROWS.items():
        lines.append(f"{label:<48}{rows[key]['ms']:>10.1f}{rows[key]['peak_mb']:>10.0f}")
        if key == "mkd":
            lines += [f"{'    ' + BREAKDOWN[k]:<48}{parts[k]:>10.1f}{'-':>10}" for k in BREAKDOWN]
    share, target = ratios["distill_share"], ratios["target_share"]
    verdict = "within" if share <= target else "OVER"
    lines += [
        f"{'(c) logging per level every iteration':<48}{rows['mkd']['logging_ms']:>10.1f}"
        f"{'-':>10}",
        f"(c)/(a) = {ratios['mkd_over_student']:.2f}",
        f"(c) logging every iteration / (c) logging off = {ratios['logging_over_mkd']:.3f} "
        "(at a period of N: 1 + (ratio - 1) / N)",
        f"masking + decoder + losses = {100 * share:.1f} % of an MKD iteration "
        f"({verdict} the target of <= {100 * target:.0f} %)",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.row:
        run_child(args)
        return None
    cfg = load_config(args)  # fails early on a bad config or override; resolves the batch size
    distiller = cfg.model.distiller._target_
    if not (isinstance(distiller, type) and issubclass(distiller, MKDDistiller)):
        raise ValueError(f"The breakdown times MKD's decoder and losses: model.distiller must be "
                         f"an MKDDistiller, got {distiller}")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        rows = {row: run_in_subprocess(args, row, workdir) for row in ROWS}
        timing = run_in_subprocess(args, "timing", workdir)
    for row in ROWS:
        rows[row]["ms"] = timing["ms"][row]
    rows["mkd"]["breakdown"] = timing["breakdown"]
    rows["mkd"]["logging_ms"] = timing["logging_ms"]
    results = {
        "config": args.config_file, "device": args.device, "batch_size": args.batch_size,
        "image_size": args.image_size, "iters": args.iters, "warmup": args.warmup,
        "threads": args.threads or torch.get_num_threads(), "overrides": args.overrides,
        "load_average": [load, os.getloadavg()[0]], "rows": rows,
    }
    results["ratios"] = summarize(rows)
    print(format_table(results))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":  # each job: python -m mkd_bench.timing --row ... (run_in_subprocess)
    main()
