"""MKD under DistributedDataParallel on CPU (gloo): Detectron2 0.6's `launch` asserts CUDA, so
the two processes are started with torch.multiprocessing directly, once for every test here.

DDP reports a parameter that got no gradient only when the next step starts, so the workers run
several steps, with `find_unused_parameters=False` as Detectron2's default.

What "DDP equals one process on the concatenated batch" can mean: DDP averages the ranks'
gradients, so it equals the gradient of the mean of the ranks' losses.
- MKD's distillation losses are means over images (of one size): they match exactly.
- The student's norms must treat each image alone (GN, FrozenBN) or share statistics across
  ranks (SyncBN); plain BN normalises each rank's batch alone. The test's student has GN.
- RetinaNet divides its losses by a moving average of the batch's foreground anchors, which
  Detectron2 does not all-reduce: each rank divides by its own. The ranks' mean is the
  concatenated batch's loss only when every rank has as many foreground anchors and the
  single process's average starts at ``world_size`` times the ranks' (the test's images have
  equal counts, checked at every step). With unequal counts DDP weights each rank's detector
  loss by its own normaliser, as for any Detectron2 RetinaNet, and no batch loss matches it.
"""
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.config import LazyConfig, instantiate
from detectron2.solver import get_default_optimizer_params
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from torch.nn.parallel import DistributedDataParallel

from mkd import MKD, PatchMask, PatchMasker
from tests import helpers
from tests.helpers import make_mkd, train_step

REPO = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2
STEPS = 3
SIZES = ((64, 64), (64, 64))  # no padding: with mask_ratio=0 no cell at all is hidden
EQUIVALENCE_STEPS = 20
BASELINE_STEPS = 20  # the "no unused-parameter error at any step", for every method
NORMALIZER = 100.0  # each rank's initial RetinaNet loss normaliser
BASELINES = ("mimic", "fgd", "mgd")
RAW_FEATURE_WEIGHTS = {"fgd": ("alpha_fg", "beta_bg", "gamma_attention", "lambda_global"),
                       "mgd": ("alpha",)}


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
        train_step(ddp, helpers.batch(sizes=SIZES, seed=10 * rank + step), step=step)
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


# -- many steps: DDP against one process on the concatenated batch ----------------------------
def _config_model(name):
    """The ``model`` node of configs/shapes/<name>.py, its MKD decoder shrunk for CPU tests."""
    model = LazyConfig.load(str(REPO / "configs" / "shapes" / f"{name}.py")).model
    if name == "mkd":
        model.distiller.decoder.update(width=32, depth=1, num_heads=4)
    # FGD's and MGD's losses compare raw features, weighted for a trained teacher; an untrained
    # tiny one's features make them diverge within a few steps (non-finite gradients by step 3),
    # and a diverged run proves nothing about DDP.
    for key in RAW_FEATURE_WEIGHTS.get(name, ()):
        model.distiller[key] *= 1e-3
    return model


def _student():
    """The tiny RetinaNet R18 student with GroupNorm, which normalises each image alone, so one
    process on the concatenated batch computes what the ranks compute (see the module
    docstring for BatchNorm)."""
    config = helpers.model_config("retinanet", 18, 32)
    config.backbone.bottom_up.stem.norm = config.backbone.bottom_up.stages.norm = "GN"
    torch.manual_seed(1)
    return instantiate(config)


def _mkd(tmp_path, config):
    """MKD with the config's distiller and masker on the tiny pair."""
    teacher = helpers.build("retinanet", 18, 32, seed=0)
    path = tmp_path / "teacher.pth"
    if not path.exists():
        torch.save({"model": teacher.state_dict()}, path)
    return MKD(student=_student(), teacher=teacher, teacher_weights=str(path),
               distiller=instantiate(config.distiller), masker=instantiate(config.masker))


def _image(rank, step):
    """The image of ``rank`` at ``step``. Every image has the same size and boxes, hence as many
    foreground anchors. No image id is an integer: odd steps carry a string (as Detectron2's
    Cityscapes instances), even steps none (as its Cityscapes and ADE20K semantic segmentation)."""
    image = helpers.batch(sizes=SIZES[:1], seed=100 * rank + step)[0]
    if step % 2:
        image["image_id"] = f"frankfurt_{rank:06d}_{step:06d}_leftImg8bit"
    else:
        del image["image_id"]
    return image


def _step(model, inputs, step):
    """One forward and backward; the losses and the foreground anchors per image."""
    with EventStorage(step) as storage:
        losses = model(inputs)
        sum(losses.values()).backward()
    num_pos = storage.history("num_pos_anchors").latest()
    return {k: float(v.detach()) for k, v in losses.items()}, num_pos


def _drawing_as_ranks(model):
    """Makes ``model`` draw image ``r`` of a batch as rank ``r`` draws it alone: the same
    (seed, rank, step, image key) for each image, hence the same mask."""
    draw = model.draw_masks

    def draw_masks(batched_inputs):
        step = model.mask_step.clone()
        grids = []
        for rank, image in enumerate(batched_inputs):
            model.mask_step.copy_(step)
            with mock.patch.object(comm, "get_rank", return_value=rank):
                grids.append(draw([image]).grid)
        return PatchMask(torch.cat(grids), model.masker.patch_size)

    model.draw_masks = draw_masks


def _recording_masks(model):
    """The grids of the masks ``model`` draws from now on, in order."""
    draw, grids = model.draw_masks, []

    def draw_masks(batched_inputs):
        mask = draw(batched_inputs)
        grids.append(mask.grid)
        return mask

    model.draw_masks = draw_masks
    return grids


def _gradient_error(model, reference):
    """The worst over parameters of |DDP grad - reference grad| / |reference grad| (L2 norms).
    A parameter's gradient norm counts as at least 1e-6 of the whole gradient's: below that is
    rounding noise (the GcBlocks' context bias, which the softmax over positions ignores, gets
    1e-11)."""
    grads = [(name, p.grad, q.grad) for (name, p), q in
             zip(model.named_parameters(), reference.parameters())]
    missing = [name for name, g, h in grads if g is None or h is None]
    assert not missing, f"no gradient: {missing}"
    floor = 1e-6 * float(torch.cat([h.flatten() for _, _, h in grads]).norm())
    return max(float((g - h).norm()) / max(float(h.norm()), floor) for _, g, h in grads)


def _relative_error(value, reference):
    return float(((value - reference).abs() / reference.abs()).max())


def _equivalence(rank, world_size, tmp_path):
    """``EQUIVALENCE_STEPS`` steps of DDP with the MKD config, one image per rank. Rank 0 runs a
    single process on both images as one batch alongside, from the DDP model's weights at
    every step (training from scratch amplifies rounding step after step); its mask step and
    loss normaliser advance on their own.

    oneDNN is off: its convolutions round an image's features differently in a batch of one
    and of two, and the deep layers (res5 has 2 x 2 positions here) amplify that to gradient
    errors of up to 8% at some steps. PyTorch's own convolution computes each image alone,
    the same in both batches (errors of 2e-5)."""
    seed_all_rng(rank)
    config = _config_model("mkd")
    # 16 cells per 64-pixel image: two ranks hardly ever draw one mask by chance (4 cells: 1/6).
    config.masker.update(patch_size=16, seed=0)
    model = _mkd(tmp_path, config)
    model.student.loss_normalizer = NORMALIZER
    ddp = DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=False)
    optimizer = torch.optim.SGD(get_default_optimizer_params(model), lr=0.01)
    rank_grids = _recording_masks(model)
    if rank == 0:  # this process alone sees both images, as one batch
        reference = _mkd(tmp_path, config)
        reference.student.loss_normalizer = world_size * NORMALIZER
        _drawing_as_ranks(reference)
        reference_grids = _recording_masks(reference)
    result = {"masks_differ": [], "without_grad": set(), "gradient_error": [],
              "loss_error": [], "masks_equal": [], "num_pos": []}
    for step in range(EQUIVALENCE_STEPS):
        optimizer.zero_grad(set_to_none=True)
        with torch.backends.mkldnn.flags(enabled=False):
            losses, num_pos = _step(ddp, [_image(rank, step)], step)
        result["without_grad"] |= {n for n, p in model.named_parameters() if p.grad is None}
        rank_losses = torch.tensor(list(losses.values()), dtype=torch.float64)
        mean_losses = torch.stack(_gathered(rank_losses, world_size)).mean(dim=0)
        all_num_pos = _gathered(torch.tensor([num_pos]), world_size)
        grids = torch.cat(_gathered(rank_grids.pop(), world_size))
        result["masks_differ"].append(not torch.equal(grids[0], grids[1]))
        if rank == 0:
            with torch.no_grad():
                for p, q in zip(model.parameters(), reference.parameters()):
                    q.copy_(p)
                    q.grad = None
            with torch.backends.mkldnn.flags(enabled=False):
                reference_losses, reference_num_pos = _step(
                    reference, [_image(r, step) for r in range(world_size)], step)
            assert list(reference_losses) == list(losses)
            result["loss_error"].append(_relative_error(
                torch.tensor(list(reference_losses.values()), dtype=torch.float64),
                mean_losses))
            result["num_pos"].append([float(n) for n in all_num_pos] + [reference_num_pos])
            result["masks_equal"].append(torch.equal(grids, reference_grids.pop()))
            result["gradient_error"].append(_gradient_error(model, reference))
        optimizer.step()
    result["without_grad"] = sorted(result["without_grad"])
    if rank == 0:
        result["normalizers"] = [model.student.loss_normalizer,
                                 reference.student.loss_normalizer]
    return result


def _baseline(rank, world_size, tmp_path, name):
    """``BASELINE_STEPS`` steps of DDP with the distiller of configs/shapes/<name>.py."""
    seed_all_rng(rank)  # MGD's feature masks come from the global RNG: they differ per rank
    model = _mkd(tmp_path, _config_model(name))
    ddp = DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=False)
    optimizer = torch.optim.SGD(get_default_optimizer_params(model), lr=0.01)
    without_grad, grads_equal, losses = set(), [], set()
    for step in range(BASELINE_STEPS):
        optimizer.zero_grad(set_to_none=True)
        losses |= set(_step(ddp, helpers.batch(sizes=SIZES, seed=10 * rank + step), step)[0])
        without_grad |= {n for n, p in model.named_parameters() if p.grad is None}
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        assert torch.isfinite(grads).all(), f"{name}: non-finite gradients at step {step}"
        grads_equal.append(_all_equal(_gathered(grads, world_size)))
        optimizer.step()
    return {"without_grad": sorted(without_grad), "grads_equal": grads_equal,
            "losses": sorted(losses)}


def _worker(rank, world_size, init_file, tmp_path, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    torch.set_num_threads(1)
    directory = tmp_path / f"rank{rank}"
    directory.mkdir()
    try:
        results[rank] = {
            "mask_ratios": {ratio: _train(rank, world_size, directory, ratio)
                            for ratio in (0.5, 0.0)},
            "equivalence": _equivalence(rank, world_size, directory),
            "baselines": {name: _baseline(rank, world_size, directory, name)
                          for name in BASELINES},
        }
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(module_tmp):
    """What every rank of one 2-process run reports, by rank."""
    tmp_path = module_tmp("ddp")
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(WORLD_SIZE, str(tmp_path / "init"), tmp_path, results),
             nprocs=WORLD_SIZE)
    return [results[rank] for rank in range(WORLD_SIZE)]


@pytest.mark.slow
def test_ddp_steps_without_find_unused_parameters_sync_gradients_and_differ_in_masks(ranks):
    for result_of_rank in ranks:
        for ratio, result in result_of_rank["mask_ratios"].items():
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


@pytest.mark.slow
def test_ddp_gradients_equal_one_process_on_the_concatenated_batch_at_every_step(ranks):
    result = ranks[0]["equivalence"]
    assert len(result["gradient_error"]) == EQUIVALENCE_STEPS
    # Rounding gives about 2e-5; masks drawn as rank 0 for every image, or the single process's
    # normaliser left at the ranks', give 0.5 and more.
    assert max(result["gradient_error"]) < 1e-3, result["gradient_error"]
    # Every loss term, the distillation ones too, is the ranks' mean.
    assert max(result["loss_error"]) < 1e-5, result["loss_error"]
    assert result["masks_equal"] == [True] * EQUIVALENCE_STEPS
    # The premise of exact detector losses: both ranks' images have as many foreground anchors
    # (per image, as the single process counts them).
    assert all(n[0] > 0 and n.count(n[0]) == len(n) for n in result["num_pos"]), result["num_pos"]
    # Detectron2 keeps the moving average in RetinaNet.loss_normalizer (both versions): the
    # single process's stays world_size times each rank's, exactly.
    rank_normalizer, reference_normalizer = result["normalizers"]
    assert rank_normalizer != NORMALIZER and reference_normalizer == WORLD_SIZE * rank_normalizer
    for result_of_rank in ranks:
        assert result_of_rank["equivalence"]["without_grad"] == []


@pytest.mark.slow
def test_ranks_draw_different_masks_for_string_image_ids_and_without_image_ids(ranks):
    """Half the steps' images carry string ids, half none: the two ranks' masks differ at every
    step, and the single process, drawing each image alone as its rank, drew the same ones (the
    previous test): a mask is a function of (seed, rank, step, image key) alone."""
    for result_of_rank in ranks:
        assert result_of_rank["equivalence"]["masks_differ"] == [True] * EQUIVALENCE_STEPS


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_configs_train_under_ddp_without_find_unused_parameters(ranks, name):
    for result_of_rank in ranks:
        result = result_of_rank["baselines"][name]
        assert result["without_grad"] == []
        assert result["grads_equal"] == [True] * BASELINE_STEPS
        assert any(loss.startswith(f"loss_{name}") for loss in result["losses"]), result
