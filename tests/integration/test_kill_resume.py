"""Killed runs resume exactly, and no kill leaves a checkpoint that fails to load.

tools/train_net.py trains a tiny MKD pair on CPU (fixed data order: one training scale, no flip,
``num_workers=0``) in subprocesses, SIGKILLed at seeded random moments, some of them during a
checkpoint write, each followed by ``--resume``; the last resumed run must end with the very
checkpoint of an uninterrupted run. Resumed runs leave ``train.seed`` random, so everything a
resume needs (mask and data-order seeds) must come from the checkpoint.
"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import default_argument_parser

from mkd.engine import train as train_net
from mkd.engine.resume import (
    AtomicCheckpointer,
    LossNormalizers,
    ResumableTrainingSampler,
    build_resumable_train_loader,
    temporary_path,
)
from tests import helpers
from tests.helpers import REPO, train_step

#: The built-in MKD config with the tiny R18 pair of tests/helpers.py on 64-px images, batch 2.
TINY_CONFIG = """
from tests import helpers
from detectron2.config import LazyConfig

_base = LazyConfig.load({base!r})
dataloader, lr_multiplier, model, optimizer, train = (
    _base.dataloader, _base.lr_multiplier, _base.model, _base.optimizer, _base.train)
model.teacher = helpers.model_config("retinanet", 18, 32)
model.student = helpers.model_config("retinanet", 18, 32)
model.teacher.num_classes = model.student.num_classes = 10
model.distiller.decoder.update(width=32, num_heads=4, depth=1)
# One training scale: the resize draws nothing that a resumed run could draw otherwise.
dataloader.train.mapper.augmentations[0].update(short_edge_length=[64], max_size=64)
dataloader.train.update(total_batch_size=2, num_workers=0)
dataloader.evaluator = None
train.update(max_iter={max_iter}, log_period=1000, eval_period=0)
train.checkpointer.period = 2
"""
MAX_ITER = 12
KILLS = 10
STARTED = "Starting training from iteration "


class Workspace:
    """The tiny config, its teacher's weights and the environment of the subprocesses."""

    def __init__(self, root: Path, digits: str):
        (root / "datasets").mkdir()
        (root / "datasets" / "mkd_digits").symlink_to(digits)
        self.root = root
        self.config = root / "tiny_mkd.py"
        self.config.write_text(TINY_CONFIG.format(
            max_iter=MAX_ITER,
            base=str(REPO / "configs" / "builtin" / "retinanet_R50_to_R18_mkd.py")))
        teacher = helpers.model_config("retinanet", 18, 32)
        teacher.num_classes = 10
        torch.manual_seed(0)
        self.teacher = root / "teacher.pth"
        torch.save({"model": instantiate(teacher).state_dict()}, self.teacher)
        # One thread: the same float reductions in every process.
        self.env = dict(os.environ, MKD_DATASETS=str(root / "datasets"), OMP_NUM_THREADS="1")

    def argv(self, out, *overrides):
        return ["--config-file", str(self.config), "--resume", f"train.output_dir={out}",
                f"model.teacher_weights={self.teacher}", *overrides]

    def launch(self, out, log, *overrides):
        """tools/train_net.py --resume in a subprocess, its output in ``log``. The first run of
        ``out`` is seeded; a resumed one draws a random seed, which the checkpoint overrides."""
        seed = -1 if (out / "last_checkpoint").exists() else 0
        command = [sys.executable, str(REPO / "tools" / "train_net.py"),
                   *self.argv(out, f"train.seed={seed}", *overrides)]
        with open(log, "w") as stream:
            return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT,
                                    env=self.env, cwd=self.root)


@pytest.fixture(scope="module")
def workspace(tiny_digits, module_tmp):
    return Workspace(module_tmp("kill_resume"), tiny_digits)


def _temporaries(out, since_ns):
    """Temporary checkpoint files written since ``since_ns``: writes of the current run (older
    ones are left by killed runs)."""
    names = []
    try:
        for entry in os.scandir(out):
            if entry.name.endswith(".tmp") and entry.stat().st_mtime_ns >= since_ns:
                names.append(entry.name)
    except FileNotFoundError:  # the directory is not made yet, or a write just completed
        pass
    return names


def _kill_at_random_moment(workspace, out, log, rng, may_progress):
    """Runs tools/train_net.py and SIGKILLs it during a checkpoint write: when ``may_progress``,
    a random time (up to 0.1 s) into its first or second one, else as its first one starts; for
    half the runs, at a random time into training if that comes first. Returns (killed during a
    write, iteration the run started from)."""
    nth_write = rng.choice([1, 2]) if may_progress else 1
    after_start = rng.uniform(0.0, 3.0) if rng.random() < 0.5 else None
    into_write = rng.uniform(0.0, 0.1) if may_progress else 0.0
    launched = time.time_ns()
    process = workspace.launch(out, log)
    deadline, writes = time.monotonic() + 300, []
    try:
        while process.poll() is None and STARTED not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        kill_at = float("inf") if after_start is None else time.monotonic() + after_start
        while process.poll() is None and time.monotonic() < kill_at:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            for name in _temporaries(out, launched):
                if name.endswith(".pth.tmp") and name not in writes:
                    writes.append(name)
                    if len(writes) == nth_write:
                        kill_at = min(kill_at, time.monotonic() + into_write)
            time.sleep(0.005)
        killed = process.poll() is None
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # A write that completed was renamed into place: what remains was cut short by the kill.
    in_write = killed and bool(_temporaries(out, launched))
    text = log.read_text()
    start_iter = int(text.split(STARTED)[1].split()[0]) if STARTED in text else None
    assert killed, (f"{log.name} finished before its kill (after_start={after_start}, "
                    f"nth_write={nth_write}, writes seen: {writes}): {text[-2000:]}")
    return in_write, start_iter


def _check_loadable(out, verified):
    """Every .pth of ``out`` loads (those changed since their last check are read again), and
    last_checkpoint names one of them."""
    for path in sorted(out.glob("*.pth")):
        stamp = (path.stat().st_size, path.stat().st_mtime_ns)
        if verified.get(path.name) != stamp:
            try:
                torch.load(path, map_location="cpu")
            except Exception as error:
                pytest.fail(f"{path} does not load after a kill: {type(error).__name__}: {error}")
            verified[path.name] = stamp
    if (out / "last_checkpoint").exists():
        name = (out / "last_checkpoint").read_text()
        assert name in verified, f"last_checkpoint names {name!r}, not a complete checkpoint"


def _assert_same(a, b, where="checkpoint"):
    """``a`` and ``b`` hold equal values and bit-identical tensors; says where they differ."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def _final(out):
    return torch.load(out / "model_final.pth", map_location="cpu")


@pytest.mark.slow
def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_checkpoint(workspace,
                                                                              tmp_path):
    straight = tmp_path / "straight"
    reference = workspace.launch(straight, tmp_path / "straight.log")
    out, rng, verified, kills = tmp_path / "killed", random.Random(0), {}, []
    try:
        while len(kills) < KILLS:
            # Once three checkpoints are saved, a kill lets none more through (whatever the speed
            # of the disk): the last run still has iterations to train.
            may_progress = len(list(out.glob("model_*.pth"))) < 3
            in_write, start_iter = _kill_at_random_moment(
                workspace, out, tmp_path / f"run{len(kills)}.log", rng, may_progress)
            _check_loadable(out, verified)
            kills.append((in_write, start_iter))
        assert workspace.launch(out, tmp_path / "last.log").wait() == 0, \
            (tmp_path / "last.log").read_text()[-3000:]
        assert reference.wait() == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        reference.kill()

    assert any(in_write for in_write, _ in kills), f"no kill landed during a write: {kills}"
    assert any(start_iter for _, start_iter in kills), f"no run resumed from a checkpoint: {kills}"
    final = _final(out)
    _assert_same(final, _final(straight))
    # Trained: the weights moved since the first checkpoint.
    first = torch.load(straight / "model_0000001.pth", map_location="cpu")["model"]
    assert any(not torch.equal(first[k], v) for k, v in final["model"].items())


def _ddp_worker(rank, init_file, runs):
    """Detectron2's launch on CPU, as tests/integration/test_ddp.py does it: one gloo process per rank, each
    running tools/train_net.py's main for every command line of ``runs`` in turn."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        for argv in runs:
            train_net.main(default_argument_parser().parse_args(argv))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_checkpoint(
        workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("MKD_DATASETS", workspace.env["MKD_DATASETS"])
    straight, out = tmp_path / "straight", tmp_path / "killed"
    max_iter = "train.max_iter=4"
    # The uninterrupted run, then the one killed once its first checkpoint is named.
    runs = mp.spawn(_ddp_worker, nprocs=2, join=False, args=(str(tmp_path / "init0"), [
        workspace.argv(straight, "train.seed=0", max_iter),
        workspace.argv(out, "train.seed=0", max_iter),
    ]))
    deadline = time.monotonic() + 300
    try:
        while not (out / "last_checkpoint").exists():
            assert all(p.is_alive() for p in runs.processes) and time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        for process in runs.processes:
            process.kill()
            process.join()
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    # In fresh processes, with random seeds: the checkpoint must restore everything.
    mp.spawn(_ddp_worker, nprocs=2, args=(str(tmp_path / "init1"), [
        workspace.argv(out, "train.seed=-1", max_iter),
    ]))
    assert "Starting training from iteration 2" in (out / "log.txt").read_text()
    _assert_same(_final(out), _final(straight))


# -- the pieces ---------------------------------------------------------------------------------
def test_resumable_sampler_continues_the_stream_of_its_seed():
    stream = TrainingSampler(5, seed=3).__iter__()
    expected = [next(stream) for _ in range(20)][7:]
    resumed = ResumableTrainingSampler(5, seed=3, skip=7)
    assert [x for _, x in zip(range(13), resumed)] == expected
    assert resumed.state_dict() == {"seed": 3}
    with pytest.raises(RuntimeError, match="seed 4.*seed 3.*--resume"):
        resumed.load_state_dict({"seed": 4})


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


class _Failing:
    """A checkpointable whose state fails to serialise: a save that fails half-way."""

    def state_dict(self):
        return {"x": _Unpicklable()}


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "detectron2"])
def test_a_failed_save_keeps_the_previous_checkpoint_only_when_atomic(tmp_path, atomic):
    """Pins that fvcore's save writes through the checkpointer's path_manager (else the atomic
    checkpointer would not be atomic), and Detectron2's own truncating behaviour."""
    model = torch.nn.Linear(2, 2)
    checkpointer = (AtomicCheckpointer if atomic else DetectionCheckpointer)(model, str(tmp_path))
    checkpointer.save("model_final")
    saved = torch.load(tmp_path / "model_final.pth")
    checkpointer.add_checkpointable("failing", _Failing())
    with pytest.raises(RuntimeError, match="cannot pickle"):
        checkpointer.save("model_final")
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    if atomic:
        _assert_same(torch.load(tmp_path / "model_final.pth"), saved)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]
    else:  # truncated, and still named by last_checkpoint
        with pytest.raises((EOFError, RuntimeError)):
            torch.load(tmp_path / "model_final.pth")


def test_atomic_checkpointer_leaves_no_temporary_file_and_lists_only_checkpoints(tmp_path):
    checkpointer = AtomicCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    # A write killed half-way leaves its temporary file: not a checkpoint, replaced on rewrite.
    Path(temporary_path(str(tmp_path / "model_0000003.pth"))).write_bytes(b"half")
    assert checkpointer.get_all_checkpoint_files() == [str(tmp_path / "model_0000001.pth")]
    checkpointer.save("model_0000003", iteration=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last_checkpoint", "model_0000001.pth", "model_0000003.pth"]
    assert torch.load(tmp_path / "model_0000003.pth")["iteration"] == 3


def test_resume_from_an_unreadable_checkpoint_says_how_to_fix_it(tmp_path):
    (tmp_path / "model_0000001.pth").write_bytes(b"truncated")
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    loader = LazyConfig.load(str(REPO / "configs" / "builtin" / "retinanet_R18_scratch.py"))
    checkpointer = AtomicCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    with pytest.raises(RuntimeError, match=r"model_0000001\.pth, named by .*last_checkpoint.*"
                                           r"complete checkpoint.*delete last_checkpoint"):
        build_resumable_train_loader(loader.dataloader.train, checkpointer, resume=True)


def test_loss_normalizers_restore_retinanets_moving_average():
    """Pins the attribute Detectron2's RetinaNet keeps its loss normalizer in, on both versions:
    a plain float, absent from its state_dict."""
    trained, fresh = helpers.build("retinanet"), helpers.build("retinanet")
    train_step(trained)
    saved = LossNormalizers(trained, period=2).state_dict()
    assert saved == {"ranks": [{"": trained.loss_normalizer}]}
    assert trained.loss_normalizer != 100 and "loss_normalizer" not in trained.state_dict()
    LossNormalizers(fresh, period=2).load_state_dict(saved)
    assert fresh.loss_normalizer == trained.loss_normalizer
