"""Random patch masks for the student's input, and the masked convolutions that honour them.

MKD hides random ``s x s`` patches of the student's image and multiplies the input of every
convolution of the student's bottom-up network by the mask of that resolution, so hidden
regions never mix with visible ones (a CNN cannot drop tokens the way a ViT encoder can).
"""
import contextlib
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["PatchMask", "PatchMasker", "MaskedConvolutions"]


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

    def at(self, height: int, width: int, stride: float) -> torch.Tensor:
        """The mask of a (height, width) map whose positions are ``stride`` pixels apart:
        position ``i`` covers the pixel centre ``(i + 0.5) * stride``. Returns (N, 1, H, W)."""
        key = (height, width, float(stride))
        if key not in self._cache:
            rows = self._cell_index(height, stride, self.grid.shape[1])
            cols = self._cell_index(width, stride, self.grid.shape[2])
            padded = nn.functional.pad(self.grid, (0, 1, 0, 1))  # last cell = outside = hidden
            self._cache[key] = padded[:, rows][:, :, cols].unsqueeze(1)
        return self._cache[key]

    def at_feature(self, feature: torch.Tensor) -> torch.Tensor:
        """The mask of a feature map computed from the padded batch this mask was drawn for."""
        if self.padded_size is None:
            raise RuntimeError("PatchMask.padded_size is unknown: apply the mask through "
                               "MaskedConvolutions, or set padded_size to the batch's (H, W)")
        height, width = feature.shape[-2:]
        return self.at(height, width, self.padded_size[0] / height)

    def _cell_index(self, length: int, stride: float, cells: int) -> torch.Tensor:
        centres = (torch.arange(length, dtype=torch.float64) + 0.5) * stride
        index = torch.floor(centres / self.patch_size).long()
        return torch.where(index < cells, index, torch.full_like(index, cells)).to(
            self.grid.device
        )


class PatchMasker:
    """Draws ``PatchMask``s with an exact hidden fraction per image.

    The draw is a pure function of (seed, step, image key), so a resumed run hides exactly the
    patches an uninterrupted run would, and every rank of a distributed run draws independently.
    """

    def __init__(self, *, patch_size: int = 32, mask_ratio: float = 0.5, seed: int = 0):
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(
                f"mask_ratio must lie in [0, 1) (the fraction of patches hidden), got {mask_ratio}"
            )
        self.patch_size = patch_size
        self.mask_ratio = mask_ratio
        self.seed = seed

    def __call__(
        self,
        image_sizes: Sequence[Tuple[int, int]],
        image_keys: Sequence[int],
        step: int,
        device: Optional[torch.device] = None,
    ) -> PatchMask:
        s = self.patch_size
        cells = [(math.ceil(h / s), math.ceil(w / s)) for h, w in image_sizes]
        grid = torch.zeros(len(cells), max(c[0] for c in cells), max(c[1] for c in cells))
        for i, ((gh, gw), key) in enumerate(zip(cells, image_keys)):
            generator = torch.Generator().manual_seed(self._draw_seed(step, key))
            num_hidden = round(self.mask_ratio * gh * gw)
            visible = torch.ones(gh * gw)
            visible[torch.randperm(gh * gw, generator=generator)[:num_hidden]] = 0.0
            grid[i, :gh, :gw] = visible.view(gh, gw)
        return PatchMask(grid.to(device) if device is not None else grid, s)

    def _draw_seed(self, step: int, key: int) -> int:
        # A fixed mixing of the three integers; Python's hash() is salted per process.
        value = (self.seed * 1_000_003 + step) * 2_147_483_647 + key
        return value % (2**63 - 1)


class MaskedConvolutions:
    """Multiplies the input of every ``nn.Conv2d`` inside ``module`` by the active mask.

    One generic mechanism for any CNN (ResNet BasicBlock and Bottleneck alike): forward
    pre-hooks on the convolutions, inactive (and free) unless ``active(mask)`` is entered, so the
    same module serves the masked distillation pass, the clean task pass and inference.
    """

    def __init__(self, module: nn.Module):
        self._mask: Optional[PatchMask] = None
        self.convs: List[nn.Conv2d] = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        if not self.convs:
            raise ValueError(f"{type(module).__name__} has no nn.Conv2d to mask")
        module.register_forward_pre_hook(self._record_padded_size)
        for conv in self.convs:
            conv.register_forward_pre_hook(self._mask_input)

    @contextlib.contextmanager
    def active(self, mask: Optional[PatchMask]):
        previous, self._mask = self._mask, mask
        try:
            yield
        finally:
            self._mask = previous

    def _record_padded_size(self, module, inputs):
        if self._mask is not None:
            self._mask.padded_size = tuple(inputs[0].shape[-2:])

    def _mask_input(self, conv, inputs):
        if self._mask is None:
            return None
        x = inputs[0]
        return (x * self._mask.at_feature(x).to(dtype=x.dtype),) + tuple(inputs[1:])
