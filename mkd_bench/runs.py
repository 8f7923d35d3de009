"""Training runs for the demo and the distillation benchmark: each run is ``tools/train_net.py``
in a subprocess (clean logging, bounded threads, runs side by side), read back from the
``metrics.json`` that Detectron2's writers leave in its output directory."""
import copy
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from detectron2.config import LazyConfig
from omegaconf import OmegaConf

from mkd.engine.train import dataset_names
from mkd_bench.datasets import BUILTIN_DATASETS, GENERATORS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Every run's command line: a subprocess keeps each run's logging and threads its own.
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOEvaluator's box metrics
#: The metrics a run reads per Detectron2 evaluation task (the prefix of its keys in
#: metrics.json), the headline first: COCOEvaluator's boxes, SemSegEvaluator's label maps.
TASK_METRICS = {"bbox": METRICS, "sem_seg": ("mIoU", "fwIoU", "mACC", "pACC")}
#: The curves' axis label per headline metric.
METRIC_LABELS = {"AP": "box AP (COCO, %)", "mIoU": "mIoU (%)"}


def config_path(name: str, folder: str = "builtin") -> str:
    return os.path.join(REPO, "configs", folder, f"{name}.py")


@functools.lru_cache(maxsize=None)
def _loaded(config_file: str):
    return LazyConfig.load(config_file)


def load_config(config_file: str, overrides: Sequence[str] = ()):
    """The config with ``overrides`` applied; each file is loaded once per process (a benchmark
    hashes hundreds of runs of a few configs)."""
    return LazyConfig.apply_overrides(copy.deepcopy(_loaded(config_file)), list(overrides))


def config_hash(config_file: str, overrides: Sequence[str]) -> str:
    """A digest of everything a run's result depends on (not where it is written)."""
    cfg = load_config(config_file, overrides)
    cfg.train.output_dir = ""
    # The generator versions of the built-in datasets it reads: a cached run on older data is
    # not a valid cache.
    versions = {key: GENERATORS[key].GENERATOR_VERSION
                for key, _ in (BUILTIN_DATASETS[n] for n in dataset_names(cfg)
                               if n in BUILTIN_DATASETS)}
    # Targets by name, not repr: a function's repr holds its address, which changes per process.
    content = json.dumps([OmegaConf.to_container(cfg, resolve=False), versions],
                         sort_keys=True, default=qualified_name)
    return hashlib.sha256(content.encode()).hexdigest()[:12]


def qualified_name(obj) -> str:
    """A function's or class's name for hashing: stable across processes, unlike its repr."""
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def _trained_steps(metrics: List[Dict]):
    """How many steps a run's ``metrics.json`` says it trained (None: no step logged)."""
    return max((m["iteration"] + 1 for m in metrics if "total_loss" in m), default=None)


@dataclass
class Run:
    name: str
    config_file: str
    output_dir: str
    overrides: List[str] = field(default_factory=list)
    task: str = "bbox"  # the evaluation task it is scored on: a key of TASK_METRICS

    @property
    def command(self) -> List[str]:
        return [sys.executable, TRAIN_NET, "--config-file",
                self.config_file, f"train.output_dir={self.output_dir}", *self.overrides]

    @property
    def finished(self) -> bool:
        """Trained to the end and evaluated after its last step, or stopped by a non-finite loss
        (a result too). A run stopped during its final evaluation has its final weights but,
        as its last score, a periodic evaluation's: unfinished, trained again."""
        if self.diverged:
            return True
        if not os.path.isfile(os.path.join(self.output_dir, "model_final.pth")):
            return False
        metrics = read_metrics(self.output_dir)
        evaluations, trained = self._evaluations(metrics), _trained_steps(metrics)
        return bool(evaluations) and (trained is None or evaluations[-1]["iteration"] >= trained)

    @property
    def diverged(self) -> bool:
        """Detectron2 stopped the run on a non-finite loss (``launch`` recorded the error)."""
        return os.path.isfile(os.path.join(self.output_dir, DIVERGED))

    def final_score(self) -> float:
        """The last evaluation's headline metric (AP, mIoU); 0 for a diverged run, whose
        weights hold non-finite values."""
        return 0.0 if self.diverged else self.evaluations()[-1][TASK_METRICS[self.task][0]]

    def evaluations(self) -> List[Dict]:
        """Every evaluation of the run's task: ``{"iteration": i, "AP": ..., ...}`` (the
        ``TASK_METRICS`` of its task), ``i`` the number of iterations trained when it ran."""
        return self._evaluations(read_metrics(self.output_dir))

    def _evaluations(self, metrics: List[Dict]) -> List[Dict]:
        # Detectron2 stores a periodic evaluation at the index of the step just done, and the
        # final one (EvalHook.after_train) at max_iter, one past the last step's index.
        trained = _trained_steps(metrics)
        names = TASK_METRICS[self.task]
        return [
            {"iteration": m["iteration"] + 1 if trained is None else
             min(m["iteration"] + 1, trained), **{k: m[f"{self.task}/{k}"] for k in names}}
            for m in metrics if f"{self.task}/{names[0]}" in m
        ]

    def seconds_per_iter(self) -> float:
        """Median of Detectron2's per-iteration ``time`` over the run's logged windows."""
        times = sorted(m["time"] for m in read_metrics(self.output_dir) if "time" in m)
        return times[len(times) // 2] if times else math.nan


#: Written in a run's directory when Detectron2 stopped it on a non-finite loss.
DIVERGED = "diverged.txt"


def read_metrics(output_dir: str) -> List[Dict]:
    """Every line Detectron2's JSONWriter wrote to the run's metrics.json (none without it)."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def launch(runs: Sequence[Run], jobs: int = 1, threads: int = 1, prefix: str = "") -> None:
    """Trains ``runs``, ``jobs`` at a time, each with ``threads`` CPU threads; prints a progress
    line per start and end, and raises with the log's tail if a run fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    pending, active = list(runs), []
    while pending or active:
        while pending and len(active) < jobs:
            run = pending.pop(0)
            os.makedirs(run.output_dir, exist_ok=True)
            # An interrupted run trains again from its start; Detectron2's JSONWriter appends,
            # so its stale metrics would otherwise mix into the new run's curves and timings.
            stale = os.path.join(run.output_dir, "metrics.json")
            if os.path.exists(stale):
                os.remove(stale)
            log = open(os.path.join(run.output_dir, "train.log"), "w")
            print(f"{prefix}started {run.name} -> {run.output_dir}", flush=True)
            process = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT, env=env)
            active.append((run, process, log, time.time()))
        time.sleep(2)
        for entry in list(active):
            run, process, log, start = entry
            if process.poll() is None:
                continue
            active.remove(entry)
            log.close()
            with open(log.name) as f:
                tail = "".join(f.readlines()[-30:])
            if process.returncode != 0 and "FloatingPointError" in tail:
                # A loss weight too large for this run is a result (the tuning grid's x3 may
                # diverge), not a failure of the benchmark: record it and go on.
                with open(os.path.join(run.output_dir, DIVERGED), "w") as f:
                    f.write(tail[tail.index("FloatingPointError"):])
                print(f"{prefix}diverged {run.name} (non-finite loss; {DIVERGED})", flush=True)
                continue
            if process.returncode != 0:
                for _, other, _, _ in active:
                    other.kill()
                raise RuntimeError(f"{run.name} failed (exit {process.returncode}); "
                                   f"log {log.name}:\n{tail}")
            print(f"{prefix}finished {run.name} in {time.time() - start:.0f} s", flush=True)


def format_table(rows: Sequence[Dict], columns: Sequence[str]) -> str:
    """A Markdown table; floats with two decimals."""
    def cell(value):
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(curves: Dict[str, List[Dict]], path: str, title: str,
                metric: str = "AP") -> None:
    """``metric`` (a key of ``METRIC_LABELS``) against iteration, one line per run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, evaluations in curves.items():
        ax.plot([e["iteration"] for e in evaluations], [e[metric] for e in evaluations],
                marker="o", label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel(METRIC_LABELS[metric])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


DEFAULT_TEACHER_CACHE = "./output/teachers"


def add_schedule_arguments(parser, teacher_iter: int, student_iter: int) -> None:
    """The demo's and the benchmark's shared options."""
    parser.add_argument("--teacher-iter", type=int, default=teacher_iter)
    parser.add_argument("--student-iter", type=int, default=student_iter)
    parser.add_argument("--teacher-cache", default=None,
                        help="where trained teachers are kept, shared by the demo and the "
                             f"benchmark (default {DEFAULT_TEACHER_CACHE}; --smoke: inside "
                             "--output-dir)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained side by side")


def teacher_cache(args, output_dir: str) -> str:
    """``--teacher-cache`` resolved: smoke runs keep their throw-away teachers in ``output_dir``."""
    default = os.path.join(output_dir, "teachers") if args.smoke else DEFAULT_TEACHER_CACHE
    return os.path.abspath(args.teacher_cache or default)


def teacher_run(cache_root: str, overrides: Sequence[str] = (), depth: int = 50,
                config_file: str = "", task: str = "bbox") -> Run:
    """A teacher (``config_file``, default the RetinaNet from scratch
    ``retinanet_R{depth}_scratch.py``), scored on ``task``, in a directory of ``cache_root`` named
    by its config hash: a finished run there is a valid cache for the same config and schedule,
    whichever tool trained it."""
    name = "teacher" if config_file else f"teacher R{depth}"
    config_file = config_file or config_path(f"retinanet_R{depth}_scratch")
    digest = config_hash(config_file, overrides)
    return Run(name, config_file, os.path.join(cache_root, f"teacher-{digest}"),
               list(overrides), task)


def schedule(max_iter: int, evaluations: int = 3) -> List[str]:
    """Overrides for a run of ``max_iter`` iterations evaluated ``evaluations`` times (the LR
    schedule of the built-in configs stretches with ``max_iter``)."""
    # Detectron2 evaluates at multiples of the period below max_iter and once more at the end.
    period = max(1, math.ceil(max_iter / evaluations))
    return [f"train.max_iter={max_iter}", f"train.eval_period={period}",
            f"train.checkpointer.period={max_iter}", f"train.log_period={min(20, period)}"]
