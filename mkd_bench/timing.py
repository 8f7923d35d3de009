#!/usr/bin/env python
"""What MKD costs next to training the student alone: time per iteration and peak memory.

One run measures, side by side on one fixed synthetic batch (random images with a few random
boxes, classes and bitmasks, built once, so data loading never enters a timing):

(a) ``student``: training the student alone: its task losses, backward, optimizer step;
(b) ``teacher``: the teacher's *backbone* forward in eval mode under ``no_grad`` on its
    preprocessed batch: the teacher-side cost MKD pays (MKD never runs the teacher's heads);
(c) ``mkd``: one full MKD training iteration: ``MKD.forward`` + backward + optimizer step;

and breaks (c) down by timing its pieces directly on the same batch and model: the student's
task pass (forward + backward of the task losses, unmasked); with ``task_pass="clean"`` the
masked pass's student backbone (forward + backward, timed unmasked); masking = mask drawing +
(masked minus unmasked backbone forward + backward of the same batch: the masked convolutions'
overhead); the teacher's backbone forward (with its preprocessing when the student's batch
cannot be reused); the decoder (forward + backward into the features); the losses (forward +
backward into the decoder's output); the optimizer step, timed inside (c)'s own iterations;
rest = (c) minus all of these (glue). (c) runs with the distiller's per-level logging off; beside
it, ``mkd_logging`` times the same iteration logging every iteration (``log_period=1``: the
per-level losses and the reconstruction correlation ``r`` into Detectron2's event storage),
reported as ``logging_over_mkd``; at a period of N the extra cost is 1/N of that ratio's excess
over 1. Timing the pieces directly needs no edit to ``mkd``;
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

Usage::

    python tools/benchmark.py --config-file configs/builtin/retinanet_R50_to_R18_mkd.py \\
        --iters 10 --image-size 160 --threads 1 --json output/benchmark.json [path.key=value ...]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from mkd import MKDDistiller

ROWS = {
    "student": "(a) student training (fwd+bwd+step)",
    "teacher": "(b) teacher backbone forward (eval, no_grad)",
    "mkd": "(c) MKD training (fwd+bwd+step)",
}
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
LOGGING = "mkd_logging"  # (c) with per-level logging every iteration: timed, not a memory row
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


def num_classes(detector_cfg) -> int:
    """RetinaNet keeps it on the model, GeneralizedRCNN on its ROI heads."""
    if "num_classes" in detector_cfg:
        return detector_cfg.num_classes
    return detector_cfg.roi_heads.num_classes


def synthetic_batch(batch_size, size, classes, device, seed=0):
    """Random images with three random boxes, classes and box-shaped bitmasks each (like
    ``tests/tiny.py``'s batch), already on ``device``."""
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for i in range(batch_size):
        image = torch.randint(0, 256, (3, size, size), generator=g).float()
        corner = torch.rand(3, 2, generator=g) * size / 2
        extent = (0.125 + 0.375 * torch.rand(3, 2, generator=g)) * size
        boxes = torch.cat([corner, corner + extent], dim=1)
        masks = torch.zeros(3, size, size, dtype=torch.bool)
        for j, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[j, y0:y1, x0:x1] = True
        inst = Instances((size, size), gt_boxes=Boxes(boxes),
                         gt_classes=torch.randint(0, classes, (3,), generator=g),
                         gt_masks=BitMasks(masks))
        inputs.append({"image": image.to(device), "instances": inst.to(device),
                       "image_id": i, "height": size, "width": size})
    return inputs


class Clock:
    """Wall time of one call, synchronised with the GPU when there is one."""

    def __init__(self, device):
        self.cuda = device == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


def median_ms(times) -> float:
    return 1000 * statistics.median(times)


def memory_mb(device) -> float:
    """The peak so far: allocated GPU memory, or the process's RSS (``ru_maxrss``: KiB)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_optimizer(cfg, model):
    cfg.optimizer.params.model = model
    return instantiate(cfg.optimizer)


def build_mkd(cfg, device):
    """The MKD model, its per-level logging off: the storage of a benchmark stays at iteration
    0, which every period divides; the logging's own cost is timed apart (``mkd_logging``)."""
    model = instantiate(cfg.model)
    model.teacher_loaded = True  # random weights: timing does not depend on them
    model.distiller.log_period = 0
    return model.to(device).train()


def logging_step(model, optimizer, batch, clock):
    """(c) logging its per-level values on every iteration (``log_period=1``)."""
    step, _ = training_step(model, optimizer, batch, clock)

    def logged():
        model.distiller.log_period = 1
        try:
            step()
        finally:
            model.distiller.log_period = 0

    return logged


def training_step(model, optimizer, batch, clock):
    """(a) and (c): Detectron2's ``SimpleTrainer.run_step`` on a fixed batch; also returns the
    list that collects the times of its optimizer steps."""
    step_times = []

    def step():
        losses = sum(model(batch).values())
        optimizer.zero_grad()
        losses.backward()
        step_times.append(clock(optimizer.step))

    return step, step_times


def teacher_forward(teacher, batch):
    """(b): the teacher's backbone on its own preprocessed batch."""
    images = teacher.preprocess_image(batch).tensor

    @torch.no_grad()
    def forward():
        teacher.backbone(images)

    return forward


def row_step(row, cfg, args, batch, clock):
    """The step a memory row repeats, with only what that row needs built."""
    if row == "teacher":
        teacher = instantiate(cfg.model.teacher).to(args.device).eval().requires_grad_(False)
        return teacher_forward(teacher, batch)
    if row == "student":
        model = instantiate(cfg.model.student).to(args.device).train()
    else:
        model = build_mkd(cfg, args.device)
    return training_step(model, build_optimizer(cfg, model), batch, clock)[0]


def breakdown_pieces(model, batch):
    """The pieces of an MKD iteration as separate calls, and the leaf tensors whose ``grad``
    they fill. Inputs of the decoder and of the losses are detached leaves that require grad,
    so backward runs through the piece and stops at its input."""
    student, distiller = model.student, model.distiller
    images = student.preprocess_image(batch).tensor
    mask = model.draw_masks(batch)

    def backbone(masked):
        features = model.masked_student_features(images, mask if masked else None)
        sum(features[k].sum() for k in model.levels).backward()

    with torch.no_grad():
        features = model.masked_student_features(images, mask)
        teacher = model.teacher_features(batch, images)
        features = {k: features[k].requires_grad_() for k in model.levels}
        teacher = {k: teacher[k] for k in model.levels}
        recon = {k: v.requires_grad_() for k, v in distiller.decoder(features, mask).items()}
    ones = {k: torch.ones_like(v) for k, v in recon.items()}
    hidden = None
    if distiller.feature_loss.positions == "hidden":
        hidden = {k: 1 - mask.at_feature(v, distiller.strides[k]) for k, v in recon.items()}

    def decoder():
        out = distiller.decoder(features, mask)
        torch.autograd.backward([out[k] for k in ones], [ones[k] for k in ones])

    def losses():
        total = distiller.feature_weight * distiller.feature_loss(recon, teacher, hidden)
        if distiller.global_loss is not None:
            total = total + distiller.global_weight * distiller.global_loss(recon, teacher)
        total.backward()

    pieces = {
        "student_task": lambda: sum(student(batch).values()).backward(),
        "mask_draw": lambda: model.draw_masks(batch),
        "backbone_masked": lambda: backbone(True),
        "backbone_clean": lambda: backbone(False),
        "teacher_forward": lambda: model.teacher_features(batch, images),
        "decoder": decoder,
        "losses": losses,
    }
    return pieces, [*features.values(), *recon.values()]


def measure_times(cfg, args, batch, clock):
    """All timings in one process, interleaved step by step, so that the load of other
    processes and its drifts hit every row and piece alike."""
    model = build_mkd(cfg, args.device)
    student_step, _ = training_step(
        model.student, build_optimizer(cfg, model.student), batch, clock
    )
    optimizer = build_optimizer(cfg, model)
    mkd_step, step_times = training_step(model, optimizer, batch, clock)
    pieces, leaves = breakdown_pieces(model, batch)
    pieces = {"student": student_step, "teacher": teacher_forward(model.teacher, batch),
              "mkd": mkd_step, LOGGING: logging_step(model, optimizer, batch, clock), **pieces}
    times = {k: [] for k in pieces}
    for i in range(args.warmup + args.iters):
        for name, piece in pieces.items():
            elapsed = clock(piece)
            model.zero_grad(set_to_none=True)
            for leaf in leaves:
                leaf.grad = None
            if i >= args.warmup:
                times[name].append(elapsed)
    ms = {k: median_ms(v) for k, v in times.items()}
    parts = {k: ms[k] for k in pieces if k not in ROWS and k != LOGGING}
    parts["optimizer_step"] = median_ms(step_times[args.warmup:])
    parts["second_pass"] = parts["backbone_clean"] if model.task_pass == "clean" else 0.0
    parts["masking"] = parts["mask_draw"] + parts["backbone_masked"] - parts["backbone_clean"]
    return {"ms": {k: ms[k] for k in ROWS}, "breakdown": parts, "logging_ms": ms[LOGGING]}


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
        sys.executable, os.path.abspath(__file__), "--config-file", args.config_file,
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


if __name__ == "__main__":
    main()
