#!/usr/bin/env python
"""Distillation benchmark: one teacher, one student, one schedule; a row per method (none,
mimic, FGD, FGD's published recipe, MGD, MKD) over seeds, on the shapes pair by default
(``configs/shapes/``; ``--pair digits``: the R50 -> R18 pair of ``configs/builtin/``).

Three commands share one cache (every run lives in a directory named by its config hash, so an
interrupted command continues where it stopped)::

    python tools/benchmark_distill.py --tune          # weight grid on the tuning seeds
    python tools/benchmark_distill.py                 # the table, on the reported seeds
    python tools/benchmark_distill.py --ablations     # MKD's open questions

``--tune`` gives mimic, FGD, MGD and MKD the same budget: x0.3, x1 and x3 of their calibrated
loss weights (one factor on all of a method's weights), on ``--tune-seeds``; it writes the factor
of the best mean AP per method to ``tuned_factors.json``. The table uses those factors (without
the file: the calibrated weights, with a warning) on ``--seeds``, which must be other seeds.
It reports mean ± std of box AP, the standard error of each method's difference from none, the
share of the teacher-student gap closed, the time per iteration relative to none, the mean AP
curves as a PNG, and the issue's targets met or missed.

``--ablations [NAME ...]`` trains MKD's variants of ``ABLATIONS`` beside none and MKD (the
table's runs: same weights, same cache) and writes ``results_ablations.md``. Extra
``path.key=value`` arguments apply to every distilled run, with ``--tag`` naming them.

``--probe N`` calibrates instead: each distilled method's distillation and task losses at
initialisation (trained teacher, N batches, no update), with the factor on the method's loss
weights that gives it MKD's initial distillation-to-task ratio (the calibrated weights x1 should
show factor 1).

A pair with ``pretrained=True`` (shapes) starts the teacher and every student from the
bottom-up of ``tools/pretrain_backbone.py`` (trained before the teacher on the first command,
then found in its cache); runs name its hashed checkpoint, not the fixed link the configs
default to, so a change of the pretraining settings is a new teacher and new runs.

``--smoke`` runs any mode for a few iterations on a few generated images (for tests).
"""
import argparse
import json
import math
import os
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import runs  # tools/runs.py: this script's directory is on sys.path


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


PAIRS = {
    "shapes": Pair("shapes", "shapes", "teacher", {
        "none": "student", "mimic": "mimic", "fgd": "fgd", "fgd_recipe": "fgd_recipe",
        "mgd": "mgd", "mkd": "mkd"}, pretrained=True),
    "digits": Pair("digits", "builtin", "retinanet_R50_scratch", {
        "none": "retinanet_R18_scratch", "mimic": "retinanet_R50_to_R18_mimic",
        "fgd": "retinanet_R50_to_R18_fgd", "mgd": "retinanet_R50_to_R18_mgd",
        "mkd": "retinanet_R50_to_R18_mkd"}, teacher_iter=900, student_iter=150),
}
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
BASELINES = ("mimic", "fgd", "fgd_recipe", "mgd")  # what MKD must beat
#: MKD's open questions: one row each, every other setting as in the table's MKD row.
ABLATIONS = {
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
}
SMOKE_ITER = 5  # Detectron2 times iterations after the third
# A five-iteration teacher has unsettled BN statistics: its raw P6/P7 features reach hundreds,
# and FGD's and MGD's raw-feature losses (weighted for a trained teacher) would diverge.
_FGD_SMOKE = ["model.distiller.alpha_fg=1e-9", "model.distiller.beta_bg=1e-9",
              "model.distiller.gamma_attention=1e-9", "model.distiller.lambda_global=1e-9"]
SMOKE_OVERRIDES = {"fgd": _FGD_SMOKE, "fgd_recipe": _FGD_SMOKE,
                   "mgd": ["model.distiller.alpha=1e-9"]}
SMOKE_PRETRAINING = dict(iters=2, batch_size=4, crop_size=32)  # tools/pretrain_backbone.Settings
TASK_LOSSES = ("loss_cls", "loss_box_reg")
PROBE_COLUMNS = ["method", "task loss", "distillation loss", "ratio", "factor to MKD's ratio"]
COLUMNS = ["method", "weights", "seeds", "AP", "AP std", "AP - none", "SE of diff", "AP50",
           "AP75", "APs", "APm", "APl", "gap closed", "time/iter vs none"]
TUNE_COLUMNS = ["method", "seeds", "AP", "AP std", "chosen"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", default="shapes", choices=list(PAIRS))
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
                      help=f"train the weight grid x{FACTORS} on --tune-seeds, write "
                           f"{TUNING_FILE}")
    mode.add_argument("--ablations", nargs="*", choices=list(ABLATIONS), metavar="NAME",
                      help=f"MKD's variants (default all: {', '.join(ABLATIONS)})")
    mode.add_argument("--probe", type=int, default=0, metavar="N",
                      help="only measure each method's initial losses over N batches")
    parser.add_argument("--smoke", action="store_true", help="a few iterations on 8 images")
    parser.add_argument("overrides", nargs="*", help="path.key=value for the distilled runs")
    args = parser.parse_args(argv)
    pair = PAIRS[args.pair]
    args.methods = args.methods or [m for m in METHODS if m in pair.methods]
    missing = [m for m in args.methods if m not in pair.methods]
    if missing:
        parser.error(f"the {args.pair} pair has no config for {missing}: choose among "
                     f"{list(pair.methods)}")
    if args.ablations == []:
        args.ablations = list(ABLATIONS)
    args.output_dir = os.path.abspath(
        args.output_dir or os.path.join("output", "benchmark_distill", args.pair))
    return args


def config_file(args, method: str) -> str:
    pair = PAIRS[args.pair]
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


def tuning_rows(args) -> List[Row]:
    """Each tuned method at each factor, on the tuning seeds only."""
    return [Row(f"{m} x{f:g}", m, args.tune_seeds, list(args.overrides), f)
            for m in args.methods if m in LOSS_WEIGHTS for f in FACTORS]


def ablation_rows(args, factors: Dict[str, float]) -> List[Row]:
    """None and MKD as in the table (the same runs), and MKD with each ablation's overrides."""
    mkd = factors.get("mkd", 1.0)
    return [Row("none", "none", args.seeds), Row("mkd", "mkd", args.seeds, args.overrides, mkd)] + [
        Row(f"mkd[{name}]", "mkd", args.seeds, list(args.overrides) + ABLATIONS[name], mkd)
        for name in args.ablations]


def pretrained_bottom_up(args) -> str:
    """The checkpoint of ``tools/pretrain_backbone.py`` for the pair's student (trained now if
    not in its cache; ``--smoke``: a tiny one in ``--output-dir``), ``""`` for a pair without."""
    if not PAIRS[args.pair].pretrained:
        return ""
    import pretrain_backbone
    from detectron2.utils.logger import setup_logger

    setup_logger(name="mkd.pretrain")  # its progress: minutes on a first command
    settings = pretrain_backbone.Settings(**SMOKE_PRETRAINING if args.smoke else {})
    root = (os.path.join(args.output_dir, "pretrained") if args.smoke
            else os.path.abspath(pretrain_backbone.DEFAULT_OUTPUT_ROOT))
    print(f"[benchmark] the pretrained bottom-up (tools/pretrain_backbone.py) in {root}",
          flush=True)
    return pretrain_backbone.pretrain(config_file(args, "none"), settings, root)


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
    planned = {}
    for row in rows:
        config = config_file(args, row.method)
        for seed in row.seeds:
            overrides = list(schedule) + [f"train.seed={seed}"]
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
            planned.setdefault(row.name, []).append(
                runs.Run(f"{row.name} seed {seed}", config, directory, overrides))
    return planned


def se_of_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of mean(a) - mean(b) for independent seeds: sqrt(s_a²/n_a + s_b²/n_b)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))


def gap_closed(method_ap: float, none_ap: float, teacher_ap: float) -> float:
    """The share of the teacher-student gap (in mean AP) a method closes."""
    gap = teacher_ap - none_ap
    return (method_ap - none_ap) / gap if gap else math.nan


def summarize(planned, teacher, rows: Sequence[Row]):
    """A row per method from each run's final COCO evaluation, and the teacher's."""
    teacher_final = teacher.evaluations()[-1]
    factors = {row.name: row.factor for row in rows}
    ap = {name: [r.evaluations()[-1]["AP"] for r in rs] for name, rs in planned.items()}
    speed = {name: statistics.median(r.seconds_per_iter() for r in rs)
             for name, rs in planned.items()}
    none = ap.get("none", [])
    none_ap = statistics.mean(none) if none else math.nan
    table = []
    for name, seed_runs in planned.items():
        finals = [r.evaluations()[-1] for r in seed_runs]
        mean = statistics.mean(ap[name])
        row = {"method": name, "weights": "-" if name == "none" else f"x{factors[name]:g}",
               "seeds": len(finals), "AP": mean,
               "AP std": statistics.stdev(ap[name]) if len(finals) > 1 else math.nan,
               "AP - none": mean - none_ap, "SE of diff": se_of_difference(ap[name], none),
               "gap closed": gap_closed(mean, none_ap, teacher_final["AP"]),
               "time/iter vs none": speed[name] / speed.get("none", math.nan)}
        row.update({k: statistics.mean(e[k] for e in finals) for k in runs.METRICS[1:]})
        table.append(row)
    table.append({"method": "teacher", "seeds": 1,
                  **{k: teacher_final[k] for k in runs.METRICS}})
    return table


def verdicts(table: Sequence[Dict]) -> List[str]:
    """The issue's three targets for MKD, each met or missed by how much."""
    by_name = {row["method"]: row for row in table}
    mkd = by_name.get("mkd")
    if mkd is None or "none" not in by_name:
        return ["targets: need the none and mkd rows"]
    lines = []
    diff, se = mkd["AP - none"], mkd["SE of diff"]
    met = diff >= 2 * se
    lines.append(f"MKD - none >= 2 SE: {'met' if met else 'missed'} "
                 f"({diff:+.2f} AP, 2 SE = {2 * se:.2f}"
                 + ("" if met else f", short by {2 * se - diff:.2f} AP") + ")")
    baselines = [by_name[m] for m in BASELINES if m in by_name]
    if baselines:
        best = max(baselines, key=lambda row: row["AP"])
        margin = mkd["AP"] - best["AP"]
        lines.append(f"MKD >= best of {'/'.join(r['method'] for r in baselines)}: "
                     f"{'met' if margin >= 0 else 'missed'} (MKD {mkd['AP']:.2f}, "
                     f"{best['method']} {best['AP']:.2f}, {margin:+.2f} AP)")
    closed = mkd["gap closed"]
    lines.append(f"MKD closes >= 30% of the gap: {'met' if closed >= 0.3 else 'missed'} "
                 f"({100 * closed:.1f}%" + ("" if closed >= 0.3 else
                                            f", short by {100 * (0.3 - closed):.1f} points")
                 + ")")
    return lines


def choose_factors(mean_ap: Dict[str, Dict[float, float]]) -> Dict[str, float]:
    """Per method, the factor of the best mean AP (ties: the one nearest x1)."""
    return {method: max(by_factor, key=lambda f: (by_factor[f], -abs(math.log(f))))
            for method, by_factor in mean_ap.items()}


def tuning_context(args, teacher) -> Dict:
    """What the tuned factors are valid for: the same pair, teacher and student schedule."""
    return {"pair": args.pair, "teacher": teacher.output_dir, "student_iter": args.student_iter,
            "overrides": list(args.overrides)}


def tune(args, planned, rows: Sequence[Row], teacher) -> List[Dict]:
    """Writes the chosen factors with the grid's mean AP; returns the grid's table."""
    factor_of = {row.name: (row.method, row.factor) for row in rows}
    mean_ap = {}
    for name, seed_runs in planned.items():
        method, factor = factor_of[name]
        mean_ap.setdefault(method, {})[factor] = statistics.mean(
            r.evaluations()[-1]["AP"] for r in seed_runs)
    chosen = choose_factors(mean_ap)
    with open(os.path.join(args.output_dir, TUNING_FILE), "w") as f:
        json.dump({"factors": chosen, "tuning_seeds": list(args.tune_seeds),
                   "mean_AP": {m: {f"{k:g}": v for k, v in d.items()}
                               for m, d in mean_ap.items()},
                   "context": tuning_context(args, teacher)}, f, indent=1)
    table = []
    for name, seed_runs in planned.items():
        method, factor = factor_of[name]
        ap = [r.evaluations()[-1]["AP"] for r in seed_runs]
        table.append({"method": name, "seeds": len(ap), "AP": statistics.mean(ap),
                      "AP std": statistics.stdev(ap) if len(ap) > 1 else math.nan,
                      "chosen": "yes" if chosen[method] == factor else ""})
    return table


def load_factors(args, teacher) -> Dict[str, float]:
    """The tuned factors of ``--tune`` (checked to fit this command), else x1 with a warning."""
    path = os.path.join(args.output_dir, TUNING_FILE)
    if not os.path.isfile(path):
        print(f"[benchmark] WARNING: no {path}: every method keeps its calibrated weights (x1), "
              "without the equal tuning budget. Run the same command with --tune first.",
              flush=True)
        return {}
    with open(path) as f:
        tuned = json.load(f)
    if tuned["context"] != tuning_context(args, teacher):
        raise SystemExit(f"{path} was tuned for {tuned['context']}, this command is "
                         f"{tuning_context(args, teacher)}: rerun --tune with this command's "
                         "options, or give this command the tuned ones")
    shared = sorted(set(tuned["tuning_seeds"]) & set(args.seeds))
    if shared:
        raise SystemExit(f"seeds {shared} chose the weights ({path}) and cannot also report "
                         f"them: give --seeds without {tuned['tuning_seeds']}")
    factors = {m: float(f) for m, f in tuned["factors"].items()}
    print(f"[benchmark] tuned weights from {path} (seeds {tuned['tuning_seeds']}): "
          + ", ".join(f"{m} x{f:g}" for m, f in factors.items()), flush=True)
    return factors


def initial_losses(config_file, overrides, batches):
    """A config's training losses at initialisation (teacher loaded, no update), averaged over
    the first ``batches`` training batches; every config sees the same batches."""
    import torch
    from detectron2.config import instantiate
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage

    cfg = runs.load_config(config_file, list(overrides) + ["dataloader.train.num_workers=0"])
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
    pair = PAIRS[args.pair]
    args.teacher_iter = args.teacher_iter or pair.teacher_iter
    args.student_iter = args.student_iter or pair.student_iter
    args.teacher_cache = runs.teacher_cache(args, args.output_dir)
    extra, student_score = [], []
    if args.smoke:
        smoke_dataset(args)
        args.teacher_iter = args.student_iter = SMOKE_ITER
        extra = ["dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
                 "dataloader.test.num_workers=0"]
        student_score = ["model.test_score_thresh=0.0"]  # five-iteration models score low
    evaluations = 1 if args.smoke else 3

    def schedule(iterations):  # None: the config's own schedule
        return runs.schedule(iterations, evaluations) if iterations else []

    bottom_up = pretrained_bottom_up(args)
    teacher = runs.teacher_run(args.teacher_cache,
                               schedule(args.teacher_iter) + extra + student_score
                               + start_from(bottom_up, distilled=False),
                               config_file=runs.config_path(pair.teacher, pair.folder))
    if teacher.finished:
        print(f"[benchmark] reusing the cached teacher {teacher.output_dir}", flush=True)
    else:
        print(f"[benchmark] training the teacher {teacher.config_file} -> "
              f"{teacher.output_dir}", flush=True)
        runs.launch([teacher], jobs=1, threads=max(1, os.cpu_count() or 1), prefix="  ")

    if args.probe:  # the calibrated weights themselves
        rows = table_rows(args, {})
    elif args.tune:
        rows = tuning_rows(args)
    else:
        factors = load_factors(args, teacher)
        rows = ablation_rows(args, factors) if args.ablations else table_rows(args, factors)
    planned = student_runs(args, rows, teacher, schedule(args.student_iter) + extra,
                           student_score, bottom_up)
    if args.probe:
        table = probe(args, planned)
        text = runs.format_table(table, PROBE_COLUMNS)
        print(text, flush=True)
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "probe.md"), "a") as f:
            f.write(f"{args.pair} {' '.join(args.overrides)}\n{text}\n\n")
        return table

    todo = [r for rs in planned.values() for r in rs if not r.finished]
    print(f"[benchmark] {len(todo)} of {sum(map(len, planned.values()))} student runs to train, "
          f"{args.jobs} at a time (finished runs are reused)", flush=True)
    runs.launch(todo, jobs=args.jobs, threads=1, prefix="  ")

    if args.tune:
        table = tune(args, planned, rows, teacher)
        text = runs.format_table(table, TUNE_COLUMNS)
        tag, notes = "_tuning", [f"tuning seeds {args.tune_seeds}; chosen factors in "
                                 f"{os.path.join(args.output_dir, TUNING_FILE)}"]
    else:
        table = summarize(planned, teacher, rows)
        text = runs.format_table(table, COLUMNS)
        tag = "_ablations" if args.ablations else f"_{args.tag}" if args.tag else ""
        notes = [] if args.ablations else verdicts(table)
    with open(os.path.join(args.output_dir, f"results{tag}.md"), "w") as f:
        f.write(text + "\n\n" + "\n".join(f"- {line}" for line in notes) + "\n")
    with open(os.path.join(args.output_dir, f"results{tag}.json"), "w") as f:
        json.dump({"rows": table, "notes": notes, "args": vars(args)}, f, indent=1)
    figure = os.path.join(args.output_dir, f"ap_vs_iteration{tag}.png")
    runs.plot_curves(mean_curves(planned), figure,
                     f"students ({args.pair}): box AP, mean over seeds")
    print(text + "\n" + "\n".join(notes), flush=True)
    return table


if __name__ == "__main__":
    main()
