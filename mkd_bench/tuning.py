"""The equal tuning budget of the benchmark's methods: ``--tune``'s grid of factors on each
method's calibrated loss weights, the factor of the best mean score chosen on the tuning seeds
(``tuned_factors.json``) and checked against every later command that reads it, and
``--probe``'s measurement at initialisation (``calibration.json``), which can centre the grid
on the weights that give each method the task's gradient."""
import json
import math
import os
import statistics
from typing import Dict, List, Optional, Sequence

from mkd_bench import plan
from mkd_bench import probe as initialisation_probe
from mkd_bench import runs
from mkd_bench.pairs import CALIBRATION_FILE, LOSS_WEIGHTS, PAIRS, TASKS, TUNING_FILE


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
    configs = {m: runs.config_hash(plan.config_file(args, m, pair),
                                   data + list(student_schedule))
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


def tune(args, planned, rows: Sequence[plan.Row], teacher, student_schedule,
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
    rows = ({"mkd"} | {plan.ablation(name)[0] for name in args.ablations} if args.ablations
            else set(args.methods))
    untuned = sorted(m for m in rows if m in LOSS_WEIGHTS and m not in factors)
    if untuned:
        raise SystemExit(f"{path} has no tuned weights for {untuned}: run --tune --methods "
                         f"{' '.join(untuned)} with this command's options first")
    print(f"[benchmark] tuned weights from {path} (seeds {tuned['tuning_seeds']}): "
          + ", ".join(f"{m} x{f:g}" for m, f in factors.items()), flush=True)
    return factors


def probe_config(config_file, overrides, batches):
    """``mkd_bench.probe.probe`` of a run's config: its losses at initialisation (teacher
    loaded, no update) and the gradients they send into the student, averaged over the first
    ``batches`` training batches; every config sees the same batches."""
    cfg = runs.load_config(config_file, list(overrides) + ["dataloader.train.num_workers=0"])
    return initialisation_probe.probe(cfg, batches)


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
