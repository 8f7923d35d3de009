"""MKD under DistributedDataParallel on CPU (gloo): Detectron2 0.6's `launch` asserts CUDA, so
the two processes are started with torch.multiprocessing directly.

DDP reports a parameter that got no gradient only when the next step starts, so the workers run
several steps, with `find_unused_parameters=False` as Detectron2's default."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.solver import get_default_optimizer_params
from detectron2.utils.env import seed_all_rng
from torch.nn.parallel import DistributedDataParallel

import tiny
from mkd import PatchMasker
from test_meta_arch import make_mkd, train_step

STEPS = 3
SIZES = ((64, 64), (64, 64))  # no padding: with mask_ratio=0 no cell at all is hidden


def _gathered(tensor, world_size):
    out = [torch.zeros_like(tensor) for _ in range(world_size)]
    dist.all_gather(out, tensor)
    return out


def _all_equal(tensors):
    return all(torch.equal(t, tensors[0]) for t in tensors)


def _train(rank, world_size, tmp_path, mask_ratio):
    """``STEPS`` steps of 2-process DDP, each rank on its own images; what the test checks."""
    seed_all_rng(rank)  # as Detectron2's default_setup does with train.seed=0
    model = make_mkd(tmp_path, teacher=("retinanet", 18, 32),
                     masker=PatchMasker(patch_size=32, mask_ratio=mask_ratio))
    ddp = DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=False)
    optimizer = torch.optim.SGD(get_default_optimizer_params(model), lr=0.01)
    teacher, in_ddp = {id(p) for p in model.teacher.parameters()}, {id(p) for p in ddp.parameters()}
    grads_equal, without_grad, token_grads = [], set(), []
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        train_step(ddp, tiny.batch(sizes=SIZES, seed=10 * rank + step), step=step)
        without_grad |= {n for n, p in model.named_parameters() if p.grad is None}
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        grads_equal.append(_all_equal(_gathered(grads, world_size)))
        token_grads.append(float(model.distiller.decoder.mask_tokens["p3"].grad.abs().sum()))
        optimizer.step()
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    # The same batch position, step and image key on every rank: the rank alone differs.
    grid = model.masker([SIZES[0]], [100], step=0).grid
    return {
        "teacher_in_ddp": bool(teacher & in_ddp),
        "teacher_grads": any(p.grad is not None for p in model.teacher.parameters()),
        "grads_equal": grads_equal,
        "without_grad": sorted(without_grad),
        "weights_equal": _all_equal(_gathered(weights, world_size)),
        "mask_seed_equal": _all_equal(_gathered(model.mask_seed.clone(), world_size)),
        "masks_differ": not _all_equal(_gathered(grid, world_size)),
        "mask_token_grad": token_grads,
    }


def _worker(rank, world_size, init_file, tmp_path, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    torch.set_num_threads(1)
    try:
        results[rank] = {ratio: _train(rank, world_size, tmp_path / f"rank{rank}", ratio)
                         for ratio in (0.5, 0.0)}
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_steps_without_find_unused_parameters_sync_gradients_and_differ_in_masks(tmp_path):
    for rank in range(2):
        (tmp_path / f"rank{rank}").mkdir()
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), tmp_path, results), nprocs=2)
    for rank in range(2):
        for ratio, result in results[rank].items():
            token_grad = result.pop("mask_token_grad")
            assert result == {
                "teacher_in_ddp": False, "teacher_grads": False, "grads_equal": [True] * STEPS,
                "without_grad": [], "weights_equal": True, "mask_seed_equal": True,
                "masks_differ": ratio > 0,  # ratio 0: every rank's mask is all visible
            }, ratio
            # mask_ratio=0 hides nothing: the mask tokens are still in the graph, with a zero
            # gradient, so DDP counts them as used and find_unused_parameters=False works.
            if ratio == 0.0:
                assert token_grad == [0.0] * STEPS
            else:
                assert all(g > 0 for g in token_grad)
