"""The diagnosis's report: ``report.md``, its tables (Markdown) and the findings read off
them."""
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf

from mkd_bench import runs
from mkd_bench.diagnose.directions import DIRECTION_COLUMNS, TOTAL_COLUMNS
from mkd_bench.diagnose.errors import BASELINE, DECODER, ERROR_COLUMNS, READOUT
from mkd_bench.diagnose.records import RunRecord, distillation_weights, loss_rows
from mkd_bench.diagnose.weighting import WEIGHTING_COLUMNS


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3g}" if abs(value) >= 1e3 or (
            value and abs(value) < 1e-3) else f"{value:.3f}"
    return "" if value is None else str(value)


def table(rows: Sequence[Dict], columns: Sequence[str]) -> str:
    """Markdown, three decimals (three significant digits for very small or large values)."""
    return runs.format_table([{c: _cell(r.get(c)) for c in columns} for r in rows], columns)


def loss_summary(records: Sequence[RunRecord]) -> List[Dict]:
    """A row per run: the first and last logged task and distillation losses and ratio, the
    last task loss against the undistilled run's, and the task loss on the diagnosed images."""
    none = next((loss_rows(r) for r in records if r.method == "none" and loss_rows(r)), [])
    summary = []
    for run in records:
        rows = loss_rows(run)
        row = {"run": run.name, "weights": distillation_weights(run) or "-",
               "AP": run.final_score(),
               "task loss on diagnosed images": sum(run.task_losses.values())}
        if rows:
            first, last = rows[0], rows[-1]
            row.update({"first iteration": first["iteration"], "last iteration": last["iteration"],
                        "task first": first["task"], "task last": last["task"],
                        "task last / none's": last["task"] / none[-1]["task"] if none else None,
                        "distillation first": first["distillation"] if run.method != "none"
                        else None,
                        "distillation last": last["distillation"] if run.method != "none"
                        else None,
                        "ratio first": first["ratio"], "ratio last": last["ratio"]})
        summary.append(row)
    return summary


LOSS_SUMMARY_COLUMNS = ["run", "weights", "AP", "first iteration", "last iteration", "task first",
                        "task last", "task last / none's", "distillation first",
                        "distillation last", "ratio first", "ratio last",
                        "task loss on diagnosed images"]


def task_loss_table(records: Sequence[RunRecord]):
    """The task loss of every run at every logged iteration (blank where a run did not log)."""
    by_run = {r.name: {row["iteration"]: row["task"] for row in loss_rows(r)} for r in records}
    iterations = sorted({i for rows in by_run.values() for i in rows})
    rows = [{"iteration": i, **{name: rows.get(i) for name, rows in by_run.items()}}
            for i in iterations]
    return rows, ["iteration", *by_run]


def findings(records: Sequence[RunRecord]) -> List[str]:
    """Facts read off the tables (no interpretation): which level carries the gradient, which
    levels give the feature loss nothing, how the decoder and readouts compare with the
    baseline and with the undistilled student."""
    lines = []
    none = next((r for r in records if r.method == "none"), None)
    for run in records:
        if run.weighting:
            top = max(run.weighting, key=lambda r: r["feature grad share"])
            silent = [r["level"] for r in run.weighting if not r["feature term"] > 1e-9]
            grads = run.gradients
            lines.append(
                f"{run.name}: {top['level']} sends {100 * top['feature grad share']:.0f}% of the "
                "feature loss's gradient into the bottom-up (levels' sum); "
                + (f"levels with no feature-loss signal: {', '.join(silent)}; " if silent else "")
                + f"distillation/task gradient norm {grads['distillation / task grad norm']:.2f}, "
                f"cosine {grads['cosine(task grad, distillation grad)']:+.2f}")
        if DECODER[1] in (run.errors[0] if run.errors else {}):
            lines.append(f"{run.name}: decoder error at hidden / visible positions per level: "
                         + ", ".join(f"{r['level']} {_cell(r[DECODER[1]])} / "
                                     f"{_cell(r[DECODER[2]])} (baseline {_cell(r[BASELINE])})"
                                     for r in run.errors))
        if none is not None and run is not none and run.errors and none.errors:
            lines.append(f"{run.name}: linear readout of the teacher, this run vs none, per "
                         "level: " + ", ".join(
                             f"{r['level']} {_cell(r[READOUT])} vs {_cell(n[READOUT])}"
                             for r, n in zip(run.errors, none.errors)))
    return lines


def write_report(records: Sequence[RunRecord], args, mode: str, figures: Dict[str, List[str]],
                 directions: Optional[Tuple[List[Dict], List[Dict]]] = None):
    """report.md in ``args.output_dir`` (``directions``: section 4's rows and totals, when the
    runs hold an MKD and a mimic run); returns its text."""
    teachers = sorted({str(OmegaConf.select(r.cfg, "model.teacher_weights"))
                       for r in records if r.method != "none"})
    parts = ["# MKD diagnosis", "",
             f"Runs: {len(records)}; {args.images} images of the test set; masks of step 0 at "
             f"seed {args.seed}; normalisation `{mode}`; teacher weights: "
             + ", ".join(f"`{t}`" for t in teachers)
             + (" (the runs do not share one teacher: compare with care)" if len(teachers) > 1
                else ""), ""]
    for run in records:
        parts.append(f"- **{run.name}** ({run.method}): `{run.checkpoint}`"
                     + (f", weights {distillation_weights(run)}" if run.method != "none" else ""))
    parts += ["", "## 1. Loss curves per term", "",
              "Task terms are what each student returns by itself ("
              + ", ".join(sorted({t for r in records for t in r.task_terms})) + "); the rest "
              "distil. Values are Detectron2's window medians from metrics.json; the last column "
              "is the task loss on the diagnosed images with the final weights (training mode).",
              "", table(loss_summary(records), LOSS_SUMMARY_COLUMNS), "",
              "Task loss per logged iteration:", "", table(*task_loss_table(records)), ""]
    for run in records:
        rows = loss_rows(run)
        if rows and run.method != "none":
            terms = sorted({k for r in rows for k in r if k.startswith("loss_")})
            parts += [f"{run.name}, every term:", "",
                      table(rows, ["iteration", *terms, "task", "distillation", "ratio"]), ""]
    parts += [f"![{p}]({os.path.basename(p)})" for p in figures["losses"]]
    parts += ["", "## 2. Reconstruction error per level", "",
              "Normalised MSE `mean (z_teacher - z)^2`, `z` after the feature loss's "
              f"normalisation (`{mode}`); the feature loss is half of it. Both sides are "
              "normalised, so under per-channel standardisation it is 2 − 2r, r the mean "
              "spatial correlation of a channel with the teacher's: 2 is uncorrelated, 0 exact. "
              "Baseline: the teacher's per-channel mean (1.0 under per-channel standardisation, "
              "reached only by an exactly constant map; 0 where a map is 1×1, which "
              "standardisation empties). Decoder: the MKD run's reconstruction from its "
              "masked student (BN on batch statistics, as in training), at all / hidden / "
              "visible positions. Raw: the clean student's own features, channel for channel. "
              "Linear readout: the best 1×1 map from the clean student's features, fitted on "
              "half the images, scored on the "
              f"other half (ridge {args.ridge:g}; where the fitted positions, half the images "
              "× positions/image, are fewer than the student's channels, the ridge dominates "
              "the fit: compare runs at one level rather than with the baseline). Own "
              "adapter: the distiller's learnt 1×1 adapter (mimic's; FGD's and MGD's where "
              "channels differ).", ""]
    for run in records:
        columns = ["level", "positions/image"] + [c for c in ERROR_COLUMNS if c in run.errors[0]]
        parts += [f"{run.name}:", "", table(run.errors, columns), ""]
    parts += [f"![{p}]({os.path.basename(p)})" for p in figures["errors"]]
    parts += ["", "## 3. Per-level weighting (MKD and mimic runs)", "",
              "One batch of the diagnosed images in training mode (BN on batch statistics, "
              "restored after). Terms: each level's term of the loss as weighted in training; "
              "grad: the norm of the gradient that level's term alone sends into the student's "
              "bottom-up network; shares are of the sum over levels.", ""]
    for run in records:
        if run.weighting:
            parts += [f"{run.name}:", "", table(run.weighting, WEIGHTING_COLUMNS), "",
                      table([{"quantity": k, "value": v} for k, v in run.gradients.items()],
                            ["quantity", "value"]), ""]
    parts += [f"![{p}]({os.path.basename(p)})" for p in figures["weighting"]]
    if directions:
        rows, totals = directions
        parts += ["", "## 4. MKD's and mimic's gradients on one student (E8)", "",
                  "The first MKD run's decoder and the first mimic run's adapter, as trained, "
                  "score the same student weights (each run's in turn) on the batch of section "
                  "3; grad: the norm of the gradient each level's terms send into the student's "
                  "bottom-up network; cosine: between MKD's and mimic's gradients (1: the same "
                  "direction, 0: unrelated).", "", table(rows, DIRECTION_COLUMNS), "",
                  table(totals, TOTAL_COLUMNS), ""]
    parts += ["", "## Findings (read off the tables)", ""]
    parts += [f"- {line}" for line in findings(records)]
    text = "\n".join(parts) + "\n"
    with open(os.path.join(args.output_dir, "report.md"), "w") as f:
        f.write(text)
    return text
