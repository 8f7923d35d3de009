"""Training and evaluation with Detectron2's own machinery: ``tools/train_net.py`` is a command
line over ``main``.

Detectron2's ``tools/lazyconfig_train_net.py``, plus what a day-long run needs: a clear error
for missing or empty datasets (and generation of the built-in ones) before any data loader is
built; overrides refused when the config has no such key (``+key=value`` adds one on purpose);
checkpoints written atomically, and ``--resume`` continuing the data stream exactly
(``mkd.engine.resume``); a non-finite loss reported with the term and the last good checkpoint.
Runs on CPU when the config says ``train.device="cpu"``. For a distillation config,
``--eval-only`` evaluates the student, from a training checkpoint or from the student exported by
``mkd.export``.
"""
import contextlib
import logging

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from omegaconf import OmegaConf

from ..modeling.meta_arch import FeatureDistillation
from ..weights import check_weights_file, checkpoint_keys, load_verified_weights
from .datasets import check_datasets_available, check_training_data, check_writable
from .overrides import apply_known_overrides
from .resume import (
    AtomicCheckpointer,
    LossNormalizers,
    UnoptimizedTorchScript,
    build_resumable_train_loader,
)

logger = logging.getLogger("detectron2")

#: What to do when an MKD config's train.init_checkpoint does not hold an MKD model.
MKD_CHECKPOINT_FIX = (
    "An MKD config's train.init_checkpoint must be an MKD checkpoint (student.* keys: the "
    "model_final.pth of an MKD run). A plain detector's checkpoint goes in model.student_weights "
    "(to start the student from it, with train.init_checkpoint=\"\") or with that detector's "
    "own config (to evaluate it)."
)


def dataset_names(cfg, splits=("train", "test")):
    """Names of the datasets read by the given loaders (``dataset.names`` is a str or a list)."""
    names = []
    for split in splits:
        value = OmegaConf.select(cfg, f"dataloader.{split}.dataset.names", default=None)
        if value is not None:
            names += [value] if isinstance(value, str) else list(value)
    return names


def do_test(cfg, model):
    """Evaluate ``model`` as is on ``cfg.dataloader.test``; the one place all evaluation runs.

    Returns:
        dict: the evaluator's results, e.g. ``{"bbox": {"AP": ..., "AP50": ...}}``; empty if the
        config has no evaluator.
    """
    if not cfg.dataloader.get("evaluator"):
        return {}
    check_datasets_available(dataset_names(cfg, ("test",)))
    ret = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(ret)
    return ret


def do_train(args, cfg):
    """Train ``cfg.model`` with the hooks of Detectron2's lazyconfig_train_net.py.

    ``args.resume`` restores model, optimizer, LR scheduler, iteration and the position in the
    training data stream from the last checkpoint in ``cfg.train.output_dir`` (what is and is
    not exact: ``mkd.resume``); otherwise weights come from ``cfg.train.init_checkpoint`` (if
    set). Checkpoints are written atomically: a run killed while saving leaves the previous one.

    Returns:
        the trainer, whose ``start_iter``/``iter`` and ``model`` callers may inspect.
    """
    check_datasets_available(dataset_names(cfg))
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)

    # Written atomically; the loader continues the data stream of the run it resumes.
    checkpointer = AtomicCheckpointer(model, cfg.train.output_dir)
    resuming = args.resume and checkpointer.has_checkpoint()
    train_loader = build_resumable_train_loader(cfg.dataloader.train, checkpointer, resuming)

    precise_bn = precise_bn_hook(cfg, model)
    # DDP takes no device ids for a model on the CPU (Detectron2 gives it the local GPU's).
    cpu = {"device_ids": None} if cfg.train.device == "cpu" else {}
    model = create_ddp_model(model, **{**cpu, **cfg.train.ddp})
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    checkpointer.add_checkpointable("trainer", trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            precise_bn,  # before the checkpointer and the evaluation, which use its statistics
            # What a resumed run needs to repeat the uninterrupted one exactly (mkd.resume).
            UnoptimizedTorchScript(),
            LossNormalizers(checkpointer.model, cfg.train.checkpointer.period),  # before saving
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )

    if isinstance(checkpointer.model, FeatureDistillation) and cfg.train.init_checkpoint and not resuming:
        # Detectron2 would load a plain detector's checkpoint into MKD as nothing, and only warn.
        load_verified_weights(
            checkpointer.model, cfg.train.init_checkpoint, role="MKD",
            required_prefix="student.", setting="train.init_checkpoint", fix=MKD_CHECKPOINT_FIX,
        )
    else:
        if cfg.train.init_checkpoint and not resuming:
            check_weights_file(cfg.train.init_checkpoint, "initial", "train.init_checkpoint")
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # The checkpoint stores the iteration that just finished: continue with the next one.
    start_iter = trainer.iter + 1 if resuming else 0
    with non_finite_loss_explained(trainer, checkpointer):
        trainer.train(start_iter, cfg.train.max_iter)
    return trainer


def precise_bn_hook(cfg, model):
    """Detectron2's PreciseBN when ``train.precise_bn.enabled`` (yacs: TEST.PRECISE_BN): BN
    running statistics re-estimated on ``num_iter`` clean training batches before each
    evaluation. For MKD, on the student alone: its masked pass may leave them frozen
    (``model.freeze_norm_statistics``), and MKD's own forward would mask the images."""
    if not OmegaConf.select(cfg, "train.precise_bn.enabled", default=False):
        return None
    return hooks.PreciseBN(
        cfg.train.eval_period, model.student if isinstance(model, FeatureDistillation) else model,
        instantiate(cfg.dataloader.train),
        OmegaConf.select(cfg, "train.precise_bn.num_iter", default=200),
    )


@contextlib.contextmanager
def non_finite_loss_explained(trainer, checkpointer):
    """Detectron2 stops on a non-finite loss with the iteration and the mean of every term; this
    re-raises naming the non-finite terms, the last good checkpoint (intact: nothing is saved
    after it) and how to continue from it. Each step's losses are kept, detached, to name them."""
    losses = {}

    def record(module, inputs, output):
        if isinstance(output, dict):  # a training step's losses (evaluation gives a list)
            losses.clear()
            losses.update({k: v.detach() for k, v in output.items()})

    handle = trainer.model.register_forward_hook(record)
    try:
        yield
    except FloatingPointError as error:
        terms = ", ".join(f"{k} = {float(v)}" for k, v in losses.items()
                          if not torch.isfinite(v).all())
        terms = terms or "on another process (Detectron2's means below)"
        checkpoint = checkpointer.get_checkpoint_file()
        restart = (
            f"{checkpoint} (nothing was saved after it): fix the cause, then continue from it "
            "with --resume and the same train.output_dir" if checkpoint else
            "none yet: fix the cause, then start again"
        )
        raise FloatingPointError(
            f"Training stopped at iteration {trainer.iter}, a loss not finite: {terms}. Last "
            f"good checkpoint: {restart}. Causes to check: a learning rate too high for the "
            "batch (lower optimizer.lr or lengthen the warm-up), that loss's weight, or its "
            f"inputs (degenerate boxes, weights not trained). Detectron2 reported: {error}"
        ) from error
    finally:
        handle.remove()


def setup(args):
    """Load the config file, apply the command line's ``key=value`` overrides, set up logging;
    refuses an unknown key and an unwritable output directory before writing anything."""
    cfg = LazyConfig.load(args.config_file)
    cfg = apply_known_overrides(cfg, args.opts, args.config_file)
    if cfg.train.output_dir:  # before default_setup writes there (its error: a bare OSError)
        check_writable(cfg.train.output_dir, "train.output_dir",
                       "set train.output_dir=<a writable directory> (it holds the log, the "
                       "config, the checkpoints and the evaluation)")
    default_setup(cfg, args)
    return cfg


#: What to do when --eval-only of an MKD config is given weights that fit neither form.
EVAL_CHECKPOINT_FIX = (
    "--eval-only of an MKD config takes an MKD checkpoint (student.* keys: the model_final.pth "
    "of an MKD run) or the student exported from one (tools/export_student.py). Another "
    "detector's checkpoint is evaluated with that detector's own config."
)


def build_for_evaluation(cfg):
    """``cfg.model`` with the weights of ``cfg.train.init_checkpoint``, verified. For an MKD
    config only the student is needed (and evaluated): the teacher's weights are not loaded, and
    the checkpoint may be an MKD run's (``student.*`` keys) or the student exported from one
    (``tools/export_student.py``: the student's own keys), loaded into ``model.student``."""
    if OmegaConf.select(cfg, "model.teacher_weights", default=None) is not None:
        cfg.model.teacher_weights = None
        cfg.model.student_weights = None
        cfg.model.init_student_from_teacher = False
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    path = cfg.train.init_checkpoint
    if not isinstance(model, FeatureDistillation):
        load_verified_weights(model, path, role="evaluated", setting="train.init_checkpoint")
        return model
    keys = checkpoint_keys(path, "evaluated", "train.init_checkpoint")
    exported = (not any(k.startswith("student.") for k in keys)
                and bool(keys & set(model.student.state_dict())))
    load_verified_weights(
        model.student if exported else model, path, role="evaluated",
        required_prefix="" if exported else "student.", setting="train.init_checkpoint",
        fix=EVAL_CHECKPOINT_FIX,
    )
    return model


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return do_test(cfg, create_ddp_model(build_for_evaluation(cfg)))
    check_training_data(dataset_names(cfg, ("train",)))
    do_train(args, cfg)
