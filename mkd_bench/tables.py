"""What a benchmark table reports from its finished runs: per method the mean and spread of the
headline metric over seeds, its difference from the undistilled student with the standard
error that says whether it is more than noise, the share of the teacher-student gap it closes,
its cost per iteration; the issue's targets for MKD, met or missed by how much; and the
figures (mean curves, a segmentation table's predictions)."""
import math
import os
import statistics
from typing import Dict, List, Sequence

from mkd_bench import runs
from mkd_bench.pairs import BASELINES, FIGURE_COLUMNS, RECIPES, TASKS, Task
from mkd_bench.plan import Row

#: The share of the teacher-student gap MKD must close (the issue's target).
GAP_TARGET = 0.4


def columns(task: Task) -> List[str]:
    """The table's columns: the headline metric's statistics, then the task's other metrics."""
    m = task.metric
    return (["method", "weights", "seeds", "diverged", m, f"{m} std", f"{m} - none",
             "SE of diff"]
            + list(task.metrics[1:]) + ["gap closed", "time/iter vs none"])


def tune_columns(task: Task) -> List[str]:
    """``--tune``'s table: each grid point's score over the tuning seeds, and the chosen one."""
    return ["method", "seeds", "diverged", task.metric, f"{task.metric} std", "chosen"]


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
    closed, target = mkd["gap closed"], GAP_TARGET
    lines.append(f"MKD closes >= {100 * target:.0f}% of the gap: "
                 f"{'met' if closed >= target else 'missed'} ({100 * closed:.1f}%"
                 + ("" if closed >= target else
                    f", short by {100 * (target - closed):.1f} points") + ")")
    return lines


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
    """``mkd_bench.figures.sem_seg``'s grid of the teacher and the first seed of the student
    and student + MKD rows (those of ``FIGURE_COLUMNS`` the table has), each titled with its
    mIoU."""
    from mkd_bench.figures import sem_seg

    shown = [("teacher", teacher)] + [(FIGURE_COLUMNS[row.method], planned[row.name][0])
                                      for row in rows if row.method in FIGURE_COLUMNS]
    metric = TASKS[args.task].metric
    models = {
        f"{title} ({run.evaluations()[-1][metric]:.1f} {metric})": (
            runs.load_config(run.config_file, run.overrides),
            os.path.join(run.output_dir, "model_final.pth"))
        for title, run in shown}
    path = os.path.join(args.output_dir, f"predictions{tag}.png")
    sem_seg.figure(models, path)
    return path
