"""Random patch masks for the student's input, and the masked convolutions that honour them.

MKD hides random ``s x s`` patches of the student's image and multiplies the input of every
convolution of the student's bottom-up network by the mask of that resolution, so hidden
regions never mix with visible ones (a CNN cannot drop tokens the way a ViT encoder can).
"""
import contextlib
import functools
import hashlib
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed.nn
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm
from torch import nn

__all__ = ["PatchMask", "PatchMasker", "MaskedConvolutions", "NORM_STATISTICS"]

#: How BatchNorm normalises the masked pass (``MaskedConvolutions``).
NORM_STATISTICS = ("visible", "clean", "batch")


class PatchMask:
    """One binary mask per image on the stride-``patch_size`` grid (1 = visible, 0 = hidden).

    Cells outside an image (the padding of a batch) are hidden, so padding never counts as
    visible content. ``at`` resamples the grid to any feature map, which keeps all strides of a
    backbone aligned with the same image-space patches.
    """

    def __init__(self, grid: torch.Tensor, patch_size: int):
        self.grid = grid  # (N, Gh, Gw), float, on the batch's device
        self.patch_size = patch_size
        self.padded_size: Optional[Tuple[int, int]] = None  # set from the backbone's input
        self._cache = {}

    def at(self, height: int, width: int, stride: Union[float, Tuple[float, float]]):
        """The mask of a (height, width) map whose position ``i`` sees the pixels
        ``[i * stride, (i + 1) * stride)`` (``stride``: one for both axes, or (y, x)): the
        visible share of those pixels. That is 0 or 1 where a position lies in one patch (strides
        that divide the patch size) and the share of visible patches where it spans several
        (e.g. P6/P7 for 32-pixel patches). Returns (N, 1, H, W)."""
        stride_y, stride_x = stride if isinstance(stride, (tuple, list)) else (stride, stride)
        key = (height, width, float(stride_y), float(stride_x))
        if key not in self._cache:
            rows = self._coverage(height, stride_y, self.grid.shape[1])  # (H, Gh)
            cols = self._coverage(width, stride_x, self.grid.shape[2])  # (W, Gw)
            with torch.autocast(self.grid.device.type, enabled=False):  # exact shares
                mask = torch.einsum("hg,ngk,wk->nhw", rows, self.grid, cols)
            self._cache[key] = mask.unsqueeze(1)
        return self._cache[key]

    def at_feature(self, feature: torch.Tensor, stride: Optional[int] = None) -> torch.Tensor:
        """The mask of a feature map computed from the padded batch this mask was drawn for.

        ``stride``: the map's nominal stride (its backbone's ``output_shape``). Without it, each
        axis's stride is the power of two that turns the padded size into the map's size by
        ceil division, as stride-2 layers do; a map of a single position is ambiguous (P5, P6
        and P7 of a 32-pixel batch), so give the stride for the coarse levels."""
        if self.padded_size is None:
            raise RuntimeError("PatchMask.padded_size is unknown: apply the mask through "
                               "MaskedConvolutions, or set padded_size to the batch's (H, W)")
        size = tuple(feature.shape[-2:])
        if stride is None:
            stride = tuple(_inferred_stride(p, n) for p, n in zip(self.padded_size, size))
        return self.at(*size, stride)

    def _coverage(self, length: int, stride: float, cells: int) -> torch.Tensor:
        """(length, cells): the share of position ``i``'s pixels that lie in cell ``c``; the
        share beyond the grid is padding, hidden."""
        start = torch.arange(length, dtype=torch.float64)[:, None] * stride
        edges = torch.arange(cells + 1, dtype=torch.float64) * self.patch_size
        overlap = torch.minimum(start + stride, edges[1:]) - torch.maximum(start, edges[:-1])
        return (overlap.clamp(min=0) / stride).to(self.grid)


def _inferred_stride(padded: int, size: int) -> int:
    stride = 1
    while -(-padded // stride) > size:
        stride *= 2
    if -(-padded // stride) != size:
        raise ValueError(
            f"No power-of-two stride turns the padded batch's {padded} pixels into a map of "
            f"{size}: pass the map's stride to PatchMask.at_feature"
        )
    return stride


class PatchMasker:
    """Draws ``PatchMask``s with an exact hidden fraction per image.

    The draw is a pure function of (seed, rank, step, image key), so a resumed run hides exactly
    the patches an uninterrupted run would, and the ranks of a distributed run hide different
    patches even at the same batch position (the rank is ``comm.get_rank()``).

    ``seed=None`` (the default) takes the run's: ``comm.shared_random_seed()``, rank 0's draw
    from the RNG that Detectron2's ``default_setup`` seeds with ``train.seed`` (random when it
    is negative), the same on every rank. It must then be called on every rank, as building
    the model is. An integer pins the seed. MKD saves the seed with its checkpoint.
    """

    def __init__(self, *, patch_size: int = 32, mask_ratio: float = 0.5,
                 seed: Optional[int] = None):
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}: set "
                             "model.masker.patch_size to e.g. 32")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(
                f"mask_ratio must lie in [0, 1) (the fraction of patches hidden), got "
                f"{mask_ratio}: set model.masker.mask_ratio to e.g. 0.5 (0 hides nothing; 1 "
                "would hide the whole image)"
            )
        self.patch_size = patch_size
        self.mask_ratio = mask_ratio
        self.seed = int(comm.shared_random_seed() if seed is None else seed)

    def __call__(
        self,
        image_sizes: Sequence[Tuple[int, int]],
        image_keys: Sequence[int],
        step: int,
        device: Optional[torch.device] = None,
    ) -> PatchMask:
        s = self.patch_size
        rank = comm.get_rank()
        cells = [(math.ceil(h / s), math.ceil(w / s)) for h, w in image_sizes]
        if self.mask_ratio > 0 and (1, 1) in cells:
            h, w = image_sizes[cells.index((1, 1))]
            smaller = 2 ** max(0, (max(h, w) - 1).bit_length() - 1)  # largest power of 2 < max
            raise ValueError(
                f"An image of {h}x{w} pixels fits inside one {s}x{s} patch: masking it hides "
                f"round({self.mask_ratio} x 1) patches, i.e. all of the image or none of it. Set "
                f"model.masker.patch_size below {max(h, w)} (e.g. {smaller}: a power of two "
                "suits every FPN stride), or train on larger images (the short_edge_length of "
                "dataloader.train.mapper.augmentations)"
            )
        grid = torch.zeros(len(cells), max(c[0] for c in cells), max(c[1] for c in cells))
        for i, ((gh, gw), key) in enumerate(zip(cells, image_keys)):
            generator = torch.Generator().manual_seed(self._draw_seed(rank, step, key))
            num_hidden = round(self.mask_ratio * gh * gw)
            visible = torch.ones(gh * gw)
            visible[torch.randperm(gh * gw, generator=generator)[:num_hidden]] = 0.0
            grid[i, :gh, :gw] = visible.view(gh, gw)
        return PatchMask(grid.to(device) if device is not None else grid, s)

    def _draw_seed(self, rank: int, step: int, key: int) -> int:
        # A fixed hash of the four integers (Python's hash() is salted per process).
        values = tuple(int(v) for v in (self.seed, rank, step, key))
        digest = hashlib.blake2b(repr(values).encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "little") >> 1


class MaskedConvolutions:
    """Multiplies the input of every ``nn.Conv2d`` inside ``module`` by the active mask.

    One generic mechanism for any CNN (ResNet BasicBlock and Bottleneck, RegNetX/Y): forward
    pre-hooks on the convolutions, inactive (and free) unless ``active(mask)`` is entered, so the
    same module serves the masked distillation pass, the clean task pass and inference.

    BatchNorm is masked too (``norm_statistics``): with batch statistics over a half-hidden map
    the hidden positions shift and rescale the visible ones. ``"visible"`` (SparK's sparse BN,
    the default) computes the statistics over visible positions only; ``"clean"`` normalises
    with the statistics the same BN saw in the latest unmasked training pass (the task pass of
    the same step; detached); ``"batch"`` is plain BN over every position. Inference and any
    pass without a mask are plain BN, and evaluation mode always uses the running statistics.

    Squeeze-and-excitation (RegNetY's ``SE``: global average pool, then 1x1 convolutions on the
    pooled vector, whose sigmoid gates every position's channels) is masked differently. The
    pooled vector has no positions, so the image-space mask does not apply to its convolutions;
    instead the pool averages over visible positions only. Hidden positions hold no hidden
    pixels (those are zeroed at the first convolution) but they do hold bias and border terms;
    a plain average would let them set the gates of visible positions and tie the gates to the
    mask ratio. With the visible-only average, the features at visible positions are a function
    of the activations at visible positions alone, as everywhere else in the masked network.
    """

    def __init__(self, module: nn.Module, norm_statistics: str = "visible"):
        if norm_statistics not in NORM_STATISTICS:
            raise ValueError(f"norm_statistics must be one of {NORM_STATISTICS}, got "
                             f"{norm_statistics!r}: set model.masked_norm_statistics")
        self._mask: Optional[PatchMask] = None
        self.norm_statistics = norm_statistics
        self.norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._clean_statistics: Dict[nn.Module, Tuple[torch.Tensor, torch.Tensor]] = {}
        if norm_statistics == "clean":
            for norm in self.norms:
                norm.register_forward_pre_hook(self._record_clean_statistics)
        pools, pooled_convs = _squeeze_excitations(module)
        self.convs: List[nn.Conv2d] = [m for m in module.modules() if isinstance(m, nn.Conv2d)
                                       and m not in pooled_convs]
        if not self.convs:
            raise ValueError(f"{type(module).__name__} has no nn.Conv2d to mask")
        module.register_forward_pre_hook(self._record_padded_size)
        for conv in self.convs:
            conv.register_forward_pre_hook(self._mask_input)
        for pool in pools:
            pool.register_forward_hook(self._pool_visible)

    @contextlib.contextmanager
    def active(self, mask: Optional[PatchMask]):
        previous, self._mask = self._mask, mask
        # The BN forward is swapped, not hooked: plain BN would also compute (and record in its
        # running statistics) the statistics over every position.
        swapped = [] if mask is None or self.norm_statistics == "batch" else self.norms
        for norm in swapped:
            norm.forward = functools.partial(self._masked_norm, norm)
        try:
            yield
        finally:
            self._mask = previous
            for norm in swapped:
                del norm.forward

    def _record_clean_statistics(self, norm, inputs):
        if self._mask is None and norm.training:
            x = inputs[0].detach().float()
            self._clean_statistics[norm] = (x.mean(dim=(0, 2, 3)),
                                            x.var(dim=(0, 2, 3), unbiased=False))

    def _masked_norm(self, norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor):
        if not norm.training and norm.track_running_stats:
            return type(norm).forward(norm, x)  # running statistics: nothing to mix
        # In fp32 whatever autocast gives the convolutions, as BN's own kernels compute: sums of
        # squares over a whole batch lose their digits in fp16 and bf16.
        with torch.autocast(x.device.type, enabled=False):
            return self._normalised(norm, x.float()).to(x.dtype)

    def _normalised(self, norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor):
        if self.norm_statistics == "clean":
            if norm not in self._clean_statistics:
                raise RuntimeError(
                    "masked_norm_statistics='clean' normalises the masked pass with the "
                    "statistics of an unmasked training pass, and none ran: use it with "
                    "task_pass='clean', or set masked_norm_statistics='visible'")
            mean, var = self._clean_statistics[norm]
            count = None
        else:
            mean, var, count = _visible_statistics(norm, x, self._mask.at_feature(x))
        momentum = norm.momentum if norm.momentum is not None else 0.0
        if count is not None and norm.track_running_stats and momentum > 0:
            # Through .data, as BN's kernel does: autograd graphs that saved these buffers (an
            # earlier pass of the same step) must not see a new version of them.
            unbiased = (var * count / (count - 1).clamp(min=1)).detach()
            norm.running_mean.data.lerp_(mean.detach().to(norm.running_mean), momentum)
            norm.running_var.data.lerp_(unbiased.to(norm.running_var), momentum)
        shape = (1, -1, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + norm.eps)
        if norm.affine:
            y = y * norm.weight.view(shape) + norm.bias.view(shape)
        return y

    def _record_padded_size(self, module, inputs):
        if self._mask is not None:
            self._mask.padded_size = tuple(inputs[0].shape[-2:])

    def _mask_input(self, conv, inputs):
        if self._mask is None:
            return None
        x = inputs[0]
        return (x * self._mask.at_feature(x).to(dtype=x.dtype),) + tuple(inputs[1:])

    def _pool_visible(self, pool, inputs, output):
        if self._mask is None:
            return None
        x = inputs[0]
        visible = self._mask.at_feature(x).to(dtype=x.dtype)
        total = (x * visible).sum(dim=(-2, -1), keepdim=True)
        return total / visible.sum(dim=(-2, -1), keepdim=True).clamp(min=1)


def _visible_statistics(norm: nn.Module, x: torch.Tensor, visible: torch.Tensor):
    """Per-channel mean and (biased) variance of ``x`` over its visible positions, weighted by
    their visible share, summed over every rank for synchronised BN; and the count."""
    visible = visible.to(x.dtype)
    sums = torch.cat([(x * visible).sum(dim=(0, 2, 3)), (x * x * visible).sum(dim=(0, 2, 3)),
                      visible.sum().reshape(1)])
    if _is_synchronised(norm) and comm.get_world_size() > 1:
        sums = torch.distributed.nn.functional.all_reduce(sums)  # differentiable
    channels = x.shape[1]
    count = sums[-1].clamp(min=1.0)
    mean = sums[:channels] / count
    var = (sums[channels:2 * channels] / count - mean * mean).clamp(min=0.0)
    return mean, var, count


def _is_synchronised(norm: nn.Module) -> bool:
    return isinstance(norm, (nn.SyncBatchNorm, NaiveSyncBatchNorm))


def _squeeze_excitations(module: nn.Module):
    """The global average pools of squeeze-and-excitation blocks inside ``module``, and the
    convolutions that see only their pooled vectors: a block is a module with a global average
    pool (to 1x1) as a child and no convolution but 1x1 ones."""
    pools, convs = [], set()
    for block in module.modules():
        block_pools = [c for c in block.children() if isinstance(c, nn.AdaptiveAvgPool2d)
                       and _pair(c.output_size) == (1, 1)]
        block_convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        if block_pools and block_convs and all(c.kernel_size == (1, 1) for c in block_convs):
            pools += block_pools
            convs.update(block_convs)
    return pools, convs


def _pair(size):
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)
