"""The diagnosis's figures: the loss curves (section 1), the reconstruction errors (section 2)
and the per-level weighting (section 3), a panel per run."""
import math
import os
from typing import List, Sequence

from mkd_bench.diagnose.errors import BASELINE, ERROR_COLUMNS
from mkd_bench.diagnose.records import RunRecord, loss_rows
from mkd_bench.diagnose.weighting import shares


def plot_losses(records: Sequence[RunRecord], directory: str) -> List[str]:
    """``loss_curves.png``: a panel per run with every term; ``task_loss.png``: the task loss of
    every run, and every distilled run's distillation-to-task ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_rows = [(r, loss_rows(r)) for r in records]
    with_rows = [(r, rows) for r, rows in with_rows if rows]
    if not with_rows:
        return []
    columns = min(3, len(with_rows))
    count = math.ceil(len(with_rows) / columns)
    fig, axes = plt.subplots(count, columns, figsize=(5 * columns, 3.6 * count), dpi=110,
                             squeeze=False)
    for ax, (run, rows) in zip(axes.flat, with_rows):
        iterations = [r["iteration"] for r in rows]
        for term in sorted({k for r in rows for k in r if k.startswith("loss_")}):
            ax.plot(iterations, [r.get(term, math.nan) for r in rows], marker=".", label=term,
                    linestyle="-" if term in run.task_terms else "--")
        ax.set_yscale("log")
        ax.set_title(run.name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(with_rows):]:
        ax.axis("off")
    fig.suptitle("every loss term (solid: task, dashed: distillation; window medians)")
    fig.tight_layout()
    curves = os.path.join(directory, "loss_curves.png")
    fig.savefig(curves)
    plt.close(fig)

    fig, (task_ax, ratio_ax) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for run, rows in with_rows:
        iterations = [r["iteration"] for r in rows]
        task_ax.plot(iterations, [r["task"] for r in rows], marker=".", label=run.name)
        if run.method != "none":
            ratio_ax.plot(iterations, [r["ratio"] for r in rows], marker=".", label=run.name)
    task_ax.set_title("task loss (" + " + ".join(with_rows[0][0].task_terms) + ")", fontsize=9)
    ratio_ax.set_title("distillation loss / task loss", fontsize=9)
    for ax in (task_ax, ratio_ax):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    task = os.path.join(directory, "task_loss.png")
    fig.savefig(task)
    plt.close(fig)
    return [curves, task]


def plot_errors(records: Sequence[RunRecord], path: str) -> None:
    """A panel per run: its errors per level, the baseline as a line at each level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(records))
    count = math.ceil(len(records) / columns)
    fig, axes = plt.subplots(count, columns, figsize=(5 * columns, 3.8 * count), dpi=110,
                             squeeze=False)
    for ax in list(axes.flat)[len(records):]:
        ax.axis("off")
    for ax, run in zip(axes.flat, records):
        levels = [r["level"] for r in run.errors]
        shown = [c for c in ERROR_COLUMNS[1:] if c in run.errors[0]]
        width = 0.8 / len(shown)
        for i, column in enumerate(shown):
            ax.bar([j + i * width for j in range(len(levels))],
                   [r[column] for r in run.errors], width, label=column)
        ax.plot([j + 0.4 - width / 2 for j in range(len(levels))],
                [r[BASELINE] for r in run.errors], "k_", markersize=25, label=BASELINE)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(levels))])
        ax.set_xticklabels(levels)
        ax.set_title(run.name, fontsize=9)
        ax.set_ylabel("normalised MSE to the teacher")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_weighting(records: Sequence[RunRecord], path: str) -> None:
    """A panel per MKD or mimic run: per level, its share of positions, of the feature loss and
    of the gradient the feature and global terms send into the bottom-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(5 * len(records), 3.8), dpi=110,
                             squeeze=False)
    for ax, run in zip(axes[0], records):
        levels = [r["level"] for r in run.weighting]
        positions = [math.prod(map(int, r["positions/image"].split("×"))) for r in run.weighting]
        bars = {"positions": shares(positions)}
        bars.update({c: [r[c] for r in run.weighting] for c in
                     ("feature share", "feature grad share", "global grad share")})
        for i, (name, values) in enumerate(bars.items()):
            ax.bar([j + i * 0.2 for j in range(len(levels))], values, 0.2, label=name)
        ax.set_xticks([j + 0.3 for j in range(len(levels))])
        ax.set_xticklabels(levels)
        ax.set_ylabel("share of the sum over levels")
        ax.set_title(run.name, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
