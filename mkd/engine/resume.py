"""Resuming a killed run: checkpoints written whole or not at all, and a resumed run that
repeats what the uninterrupted one would have done.

What Detectron2 alone does differently (measured): its checkpointer writes ``model_*.pth`` and
``last_checkpoint`` in place, so a run killed while saving leaves a truncated ``.pth`` or an
empty ``last_checkpoint``, on which ``--resume`` fails; its ``TrainingSampler`` starts its stream
over on resume, from a new random seed unless ``train.seed`` is set; RetinaNet's and FCOS's loss
normalizers (plain attributes) restart at their initial value; and TorchScript's optimization of
the focal loss after its first call makes gradients depend on how long the process has run.

What a resume with ``tools/train_net.py`` restores exactly: model (MKD's mask seed and step
included), optimizer, LR scheduler, iteration, loss normalizers of every rank, and the order of
the training images (``ResumableTrainingSampler`` says when). Not restored: the state of the
random number generators, so random augmentations (flip, a choice of scales) and a model's own
random draws (R-CNN's proposal sampling) differ from the uninterrupted run; and under DDP the BN
running statistics of ranks other than 0 (Detectron2 does not broadcast buffers), which only
evaluation and a masked pass with frozen statistics read. With augmentations that draw nothing,
a model that draws nothing (RetinaNet; MKD's masks are seeded) and
``dataloader.train.num_workers=0``, a resumed run ends bit-identical to an uninterrupted one on
CPU, in one process or two (tests/integration/test_kill_resume.py). The LR schedule depends on
``train.max_iter``: resume with the one the run started with.
"""
import contextlib
import itertools
import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.registry import locate
from torch.utils.data import IterableDataset

__all__ = [
    "AtomicCheckpointer", "AtomicWriter", "LossNormalizers", "ResumableTrainingSampler",
    "UnoptimizedTorchScript", "build_resumable_train_loader", "temporary_path",
]

logger = logging.getLogger(__name__)

#: The checkpoint key of the training data order (``ResumableTrainingSampler.state_dict``).
DATA_ORDER_KEY = "data_order"


def temporary_path(path: str) -> str:
    """Where ``path`` is written before it replaces ``path``: in the same directory (a rename is
    atomic only within one file system), hidden, and not ending in ``.pth``, so that nothing
    lists it as a checkpoint. One name per target: a write killed and redone reuses it."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp")


class AtomicWriter:
    """A file opened for writing whose content appears at its path only when it is closed
    without error: it is written to ``temporary_path(path)``, flushed to disk, then renamed over
    ``path``. A writer killed at any moment leaves ``path`` as it was (and at most the temporary
    file, which the next write of ``path`` replaces)."""

    def __init__(self, path: str, mode: str = "wb", **kwargs):
        self.path = path
        self.temporary = temporary_path(path)
        self.file = open(self.temporary, mode, **kwargs)

    def __getattr__(self, name):  # write, flush, fileno, ...: the temporary file's
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, error_type, error, traceback):
        if error_type is None:
            self.close()
        else:  # half-written: the previous file stays
            self.file.close()
            os.remove(self.temporary)

    def close(self):
        if self.file.closed:
            return
        self.file.flush()
        os.fsync(self.file.fileno())  # the bytes are on disk before the name points at them
        self.file.close()
        os.replace(self.temporary, self.path)
        try:  # and the rename survives a power loss, where the file system can sync a directory
            directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            logger.debug(f"Could not sync the directory of {self.path}: {error}")


class _AtomicWrites:
    """A Detectron2 PathManager whose local files opened for writing are ``AtomicWriter``s;
    anything else (reading, listing, remote paths) is the wrapped manager's."""

    def __init__(self, path_manager):
        self.path_manager = path_manager

    def open(self, path, mode="r", **kwargs):
        if "w" in mode and os.path.isdir(os.path.dirname(path) or "."):
            return AtomicWriter(path, mode, **kwargs)
        return self.path_manager.open(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self.path_manager, name)


class AtomicCheckpointer(DetectionCheckpointer):
    """Detectron2's ``DetectionCheckpointer`` whose checkpoints and ``last_checkpoint`` are
    written atomically (``AtomicWriter``): a kill during a save leaves the previous checkpoint
    and a ``last_checkpoint`` that names a complete file.

    fvcore's ``save`` and ``tag_last_checkpoint`` write through the checkpointer's public
    ``path_manager``, which is what this replaces; tests/integration/test_kill_resume.py pins that on both
    Detectron2 versions (a save that fails half-way must leave the previous file intact)."""

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.path_manager = _AtomicWrites(self.path_manager)


class ResumableTrainingSampler(TrainingSampler):
    """Detectron2's ``TrainingSampler`` (each rank's share of one infinite, seeded shuffle) with
    the first ``skip`` indices of this rank's share left out, and its seed saved with the
    checkpoint: a resumed run continues the stream of the run it resumes.

    Built by ``build_resumable_train_loader``, which skips what the saved iterations consumed.
    Exact when every batch takes the next indices of the stream: with aspect-ratio grouping
    (Detectron2's default), when all images fall in one group (all wider than tall, or none);
    with ``num_workers=0``, or Detectron2 0.6's loader (Detectron2 main hands each worker whole
    batches, whose interleaving a skip can shift); and with an unchanged total batch size."""

    def __init__(self, size: int, *, shuffle: bool = True, seed=None, skip: int = 0):
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        super().__init__(size, shuffle=shuffle, seed=self.seed)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state):
        """The stream was positioned from this checkpoint when the loader was built; loading it
        only checks that it is the same one."""
        if state["seed"] != self.seed:
            raise RuntimeError(
                f"The checkpoint's training data order (seed {state['seed']}) is not the one the "
                f"data loader was built with (seed {self.seed}): the checkpoint changed while "
                "the run started. Start the run again with --resume."
            )


class LossNormalizers(HookBase):
    """Saves with the trainer's state, for every rank, the moving averages that Detectron2's
    RetinaNet and FCOS divide their losses by (``loss_normalizer``: a plain attribute, not a
    buffer, and each rank's own). Without it a resumed run restarts them at their initial value
    (100 for RetinaNet) and trains on differently weighted losses.

    Register it before the ``PeriodicCheckpointer`` with the same ``period``: on the steps the
    checkpointer saves, every rank's values are gathered first (one small collective)."""

    def __init__(self, model, period: int):
        self.model = model
        self.period = period
        self.ranks = [{}] * comm.get_world_size()  # as gathered at the last scheduled save

    def own(self):
        """This rank's normalizers by module name (none before the first training step)."""
        return {name: module.loss_normalizer for name, module in self.model.named_modules()
                if hasattr(module, "loss_normalizer")}

    def after_step(self):
        # fvcore's PeriodicCheckpointer.step saves on these iterations.
        next_iter = self.trainer.iter + 1
        if comm.get_world_size() > 1 and (next_iter % self.period == 0
                                          or next_iter >= self.trainer.max_iter):
            self.ranks = comm.all_gather(self.own())

    def state_dict(self):
        ranks = list(self.ranks)
        ranks[comm.get_rank()] = self.own()
        return {"ranks": ranks}

    def load_state_dict(self, state):
        ranks = state["ranks"]
        if len(ranks) != comm.get_world_size():
            logger.warning(f"The loss normalizers were saved by {len(ranks)} processes, and "
                           f"{comm.get_world_size()} resume: every one starts from rank 0's.")
        saved = ranks[comm.get_rank()] if len(ranks) == comm.get_world_size() else ranks[0]
        for name, value in saved.items():
            self.model.get_submodule(name).loss_normalizer = value


class UnoptimizedTorchScript(HookBase):
    """Trains with TorchScript's graph optimizations off. TorchScript optimizes a scripted
    function (Detectron2's focal loss, in RetinaNet and FCOS) after profiling its first call,
    and the optimized backward rounds differently: gradients would depend on how many steps the
    process has run, so a resumed run could not repeat the uninterrupted one bit for bit.
    Unoptimized, every call computes as the first one does. It costs the fusion of the focal
    loss's elementwise operations on GPU, a small part of a step."""

    def before_train(self):
        self.unoptimized = contextlib.ExitStack()
        self.unoptimized.enter_context(torch.jit.optimized_execution(False))

    def after_train(self):
        self.unoptimized.close()


def _resume_point(checkpointer):
    """(iteration to start from, saved sampler seed or None) of the checkpoint ``--resume``
    loads. Read before the data loader exists, since its workers copy the sampler when they
    start; memory-mapped, so that tensors are not read twice."""
    name = checkpointer.get_checkpoint_file()
    try:
        saved = torch.load(checkpointer.path_manager.get_local_path(name), map_location="cpu",
                           mmap=True)
    except Exception as error:  # any failure to read the file: its text is kept below
        raise RuntimeError(
            f"--resume loads {name}, named by {checkpointer.save_dir}/last_checkpoint, and "
            f"cannot read it ({type(error).__name__}: {error}). Write the name of a complete "
            f"checkpoint of {checkpointer.save_dir} into last_checkpoint, or delete "
            "last_checkpoint to train from the start."
        ) from error
    return saved["iteration"] + 1, saved.get(DATA_ORDER_KEY, {}).get("seed")


def build_resumable_train_loader(loader_cfg, checkpointer, resume: bool):
    """``instantiate(loader_cfg)``, the training loader of a LazyConfig, but when it is
    Detectron2's ``build_detection_train_loader`` without a ``sampler``: with a
    ``ResumableTrainingSampler`` registered with ``checkpointer`` (as ``data_order``) and, when
    ``resume``, positioned where the checkpoint to resume from left the stream.

    Configs stay as they are. A config's own sampler (e.g. ``RepeatFactorTrainingSampler``) or
    data loader restarts its stream on resume, as in Detectron2."""
    target = loader_cfg.get("_target_")
    if isinstance(target, str):
        target = locate(target)
    if target is not build_detection_train_loader or loader_cfg.get("sampler") is not None:
        if resume:
            logger.warning("The training data loader's own sampler or builder restarts its "
                           "data stream on resume: the resumed run sees other images than the "
                           "interrupted run would have.")
        return instantiate(loader_cfg)

    start_iter, seed = _resume_point(checkpointer) if resume else (0, None)
    if resume and seed is None:
        logger.warning("The checkpoint holds no training data order (saved by another "
                       "trainer): the resumed run draws a new shuffle of the training images.")
    dataset = instantiate(loader_cfg.dataset)
    loader = {key: loader_cfg[key] for key in loader_cfg}
    loader["dataset"] = dataset
    if not isinstance(dataset, IterableDataset):  # which Detectron2 reads without a sampler
        batch_size = (loader_cfg.get("single_gpu_batch_size")
                      or loader_cfg.total_batch_size // comm.get_world_size())
        loader["sampler"] = ResumableTrainingSampler(len(dataset), seed=seed,
                                                     skip=start_iter * batch_size)
        checkpointer.add_checkpointable(DATA_ORDER_KEY, loader["sampler"])
    return instantiate(loader)
