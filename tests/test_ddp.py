"""MKD under DistributedDataParallel on CPU (gloo): Detectron2 0.6's `launch` asserts CUDA, so
the two processes are started with torch.multiprocessing directly."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import tiny
from test_meta_arch import make_mkd, train_step


def _worker(rank, world_size, init_file, tmp_path, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        torch.manual_seed(0)
        model = make_mkd(tmp_path / f"rank{rank}")
        ddp = DistributedDataParallel(model, broadcast_buffers=False)
        teacher = {id(p) for p in model.teacher.parameters()}
        in_ddp = {id(p) for p in ddp.parameters()}
        train_step(ddp, tiny.batch(seed=rank))  # each rank its own images
        grad = model.distiller.decoder.phi["p3"].weight.grad.clone()
        gathered = [torch.zeros_like(grad) for _ in range(world_size)]
        dist.all_gather(gathered, grad)
        results[rank] = {
            "teacher_in_ddp": bool(teacher & in_ddp),
            "grads_equal": all(torch.equal(g, gathered[0]) for g in gathered),
            "grad_nonzero": bool(grad.abs().sum() > 0),
            "teacher_grads": any(p.grad is not None for p in model.teacher.parameters()),
        }
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_step_keeps_the_teacher_out_and_syncs_gradients(tmp_path):
    for rank in range(2):
        (tmp_path / f"rank{rank}").mkdir()
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), tmp_path, results), nprocs=2)
    for rank in range(2):
        assert results[rank] == {"teacher_in_ddp": False, "grads_equal": True,
                                 "grad_nonzero": True, "teacher_grads": False}
