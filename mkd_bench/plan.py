"""What a benchmark command trains: the rows of its table (a method, with extra overrides, at a
factor of its calibrated loss weights, on seeds) and one run per row and seed. A run's
directory is named by its config hash, so any command (the table, ``--tune``, ``--ablations``)
finds the runs another one left, and an interrupted command continues where it stopped."""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from mkd_bench import runs
from mkd_bench.pairs import (
    ABLATIONS,
    LOSS_WEIGHTS,
    PAIRS,
    SMOKE_OVERRIDES,
    SMOKE_PRETRAINING,
    TASKS,
)


def config_file(args, method: str, pair: str = "") -> str:
    """The config of ``method``'s row in ``pair`` (``""``: the command's pair)."""
    pair = PAIRS[pair or args.pair]
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


def tuning_rows(args, base: Optional[Dict[str, float]] = None) -> List[Row]:
    """Each tuned method at each factor of the grid, on the tuning seeds only; ``base``: the
    grid's x1 per method (``mkd_bench.tuning.calibration_factors``; 1 where a method has
    none)."""
    base = base or {}
    return [Row(f"{m} x{f:g}", m, args.tune_seeds, list(args.overrides), base.get(m, 1.0) * f)
            for m in args.methods if m in LOSS_WEIGHTS for f in args.grid]


def ablation(name: str):
    """``(method, overrides)`` of an ablation: a bare list of overrides varies MKD."""
    value = ABLATIONS[name]
    return value if isinstance(value, tuple) else ("mkd", value)


def ablation_rows(args, factors: Dict[str, float]) -> List[Row]:
    """None and MKD as in the table (the same runs), and each ablation's method (MKD unless it
    says otherwise) with its overrides, at that method's table weights."""
    mkd = factors.get("mkd", 1.0)
    rows = [Row("none", "none", args.seeds), Row("mkd", "mkd", args.seeds, args.overrides, mkd)]
    for name in args.ablations:
        method, extra = ablation(name)
        rows.append(Row(f"{method}[{name}]", method, args.seeds, list(args.overrides) + extra,
                        factors.get(method, 1.0)))
    return rows


def pretrained_bottom_up(args, detector: str = "") -> str:
    """The checkpoint of ``tools/pretrain_backbone.py`` for the bottom-up of ``detector``
    (``<folder>/<name>``; ``""``: the pair's student's), trained now if not in its cache
    (``--smoke``: a tiny one in ``--output-dir``); ``""`` without ``args.pretrained``."""
    if not args.pretrained:
        return ""
    from detectron2.utils.logger import setup_logger

    from mkd_bench import pretrain

    setup_logger(name="mkd.pretrain")  # its progress: minutes on a first command
    settings = pretrain.Settings(**SMOKE_PRETRAINING if args.smoke else {})
    root = (os.path.join(args.output_dir, "pretrained") if args.smoke
            else os.path.abspath(pretrain.DEFAULT_OUTPUT_ROOT))
    print(f"[benchmark] the pretrained bottom-up (tools/pretrain_backbone.py) in {root}",
          flush=True)
    detector = detector or PAIRS[args.pair].pretraining_config
    if detector:
        folder, name = detector.split("/")
        config = runs.config_path(name, folder)
    else:
        config = config_file(args, "none")
    return pretrain.pretrain(config, settings, root, overrides=PAIRS[args.pair].overrides)


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
    planned, evaluation = {}, TASKS[args.task].evaluation
    for row in rows:
        config = config_file(args, row.method)
        for seed in row.seeds:
            overrides = list(PAIRS[args.pair].overrides) + list(schedule)
            overrides += [f"train.seed={seed}"]
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
            planned.setdefault(row.name, []).append(runs.Run(
                f"{row.name} seed {seed}", config, directory, overrides, evaluation))
    return planned


def unfinished_seed_by_seed(planned: Dict[str, List[runs.Run]]) -> List[runs.Run]:
    """The runs still to train, every row's first seed before any row's second: a command cut
    short leaves all methods on the same seeds, comparable, instead of the last rows empty."""
    indexed = [(i, run) for rs in planned.values() for i, run in enumerate(rs) if not run.finished]
    return [run for _, run in sorted(indexed, key=lambda item: item[0])]
