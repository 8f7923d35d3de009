"""MKD's adaptive decoder: reconstructs the teacher's full FPN features from the masked
student's (training only; neither inference nor the exported student carries it)."""
from typing import Dict, List, Optional

import torch
from detectron2.layers import ShapeSpec
from torch import nn
from torch.nn import functional as F

from .masking import PatchMask

__all__ = ["MKDDecoder"]


def _sincos_position_embedding(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine embedding (MAE's), (H*W, dim): any grid size works unchanged."""
    if dim % 4:
        raise ValueError(f"decoder width must be divisible by 4 for 2-D position embedding, "
                         f"got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angles = coord[:, None] * omega[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)


class MKDDecoder(nn.Module):
    """``F_hat_i = SRM_i(Transformer(SAM_i(phi_i(F_i^S)) with mask tokens at hidden cells))``.

    Every level is brought to the token grid (stride ``token_stride``, by default the mask's
    ``patch_size``, so that one token is one image patch): ``p = token_stride / stride``;
    ``p > 1`` levels use a conv with kernel = stride = ``p``, ``p < 1`` levels (e.g.
    RetinaNet's P6/P7) are upsampled by ``1/p``. The spatial
    recovery module (SRM) maps each token back to ``p^2 * C^T`` values (pixel shuffle), or pools
    ``p < 1`` levels back down.

    ``token_stride`` below the patch size (a divisor of it) gives the fine levels more tokens
    than patches: on small images a 32-pixel grid squeezes all of P3 into a handful of tokens.
    A token still lies inside one patch, so it is wholly hidden or wholly visible. ``depth=0``
    keeps the decoder without its transformer (per-token maps only, no context).

    ``sam_norm=True`` puts a LayerNorm (per level) on the student's tokens after SAM, before the
    mask tokens and position embedding join them (the paper is silent; MAE's decoder gets
    LayerNormed encoder tokens), so that the unnormalised SAM output cannot be drowned by the
    unit-scale position embedding. Measured on the shapes proxy, it changes neither the score nor
    how much the decoder reads the student (docs/mkd_experiments.md).

    ``residual_adapter=True`` is this project's variant, not the paper's: a 1x1 conv per level
    from the student's map straight to the teacher's channels, added to the decoder's output,
    so every position also gets mimicking's local, direct path to the student.
    """

    def __init__(
        self,
        *,
        width: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        patch_size: int = 32,
        token_stride: Optional[int] = None,
        one_sequence: bool = True,
        sam_norm: bool = False,
        residual_adapter: bool = False,
    ):
        super().__init__()
        if depth < 0:
            raise ValueError(f"decoder depth must be >= 0, got {depth}")
        token_stride = token_stride or patch_size
        if patch_size % token_stride:
            raise ValueError(
                f"token_stride {token_stride} must divide the mask's patch_size {patch_size} (a "
                "token must lie inside one patch): set model.distiller.decoder.token_stride to "
                f"a divisor of {patch_size}, or null for one token per patch")
        if width % num_heads:
            raise ValueError(f"decoder width {width} must be divisible by num_heads {num_heads}")
        self.width = width
        self.patch_size = patch_size
        self.token_stride = token_stride
        self.one_sequence = one_sequence
        self.residual = nn.ModuleDict() if residual_adapter else None
        self.sam_norm = nn.ModuleDict() if sam_norm else None
        layer = nn.TransformerEncoderLayer(
            width, num_heads, int(width * mlp_ratio), dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.transformer = (nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
                            if depth else nn.Identity())
        self.norm = nn.LayerNorm(width)
        self.phi = nn.ModuleDict()
        self.sam = nn.ModuleDict()
        self.srm = nn.ModuleDict()
        self.mask_tokens = nn.ParameterDict()
        self.levels: List[str] = []
        self._scale: Dict[str, float] = {}  # p per level

    def build(self, student_shapes: Dict[str, ShapeSpec], teacher_shapes: Dict[str, ShapeSpec]):
        """Creates the per-level layers for the distilled levels (the keys of both dicts)."""
        s = self.token_stride
        for level, shape in student_shapes.items():
            stride, c_out = shape.stride, teacher_shapes[level].channels
            if s % stride and stride % s:
                grid = ("mask patch size", "patch_size") if s == self.patch_size else (
                    "decoder's token stride", "token_stride")
                raise ValueError(
                    f"level {level} has stride {stride}, which neither divides nor is a multiple "
                    f"of the {grid[0]} {s}; choose a {grid[1]} compatible with all strides"
                )
            p = s / stride
            self.phi[level] = nn.Conv2d(shape.channels, self.width, kernel_size=1)
            if p > 1:
                self.sam[level] = nn.Conv2d(self.width, self.width, int(p), stride=int(p))
                self.srm[level] = nn.Linear(self.width, int(p) ** 2 * c_out)
            else:
                self.sam[level] = nn.Upsample(scale_factor=int(1 / p), mode="nearest")
                self.srm[level] = nn.Linear(self.width, c_out)
            if self.sam_norm is not None:
                self.sam_norm[level] = nn.LayerNorm(self.width)
            self.mask_tokens[level] = nn.Parameter(torch.zeros(self.width))
            nn.init.normal_(self.mask_tokens[level], std=0.02)
            if self.residual is not None:
                self.residual[level] = nn.Conv2d(shape.channels, c_out, kernel_size=1)
            self.levels.append(level)
            self._scale[level] = p
        self.level_embed = nn.Parameter(torch.zeros(len(self.levels), self.width))
        nn.init.normal_(self.level_embed, std=0.02)
        return self

    def forward(self, features: Dict[str, torch.Tensor], mask: PatchMask) -> Dict[str, torch.Tensor]:
        """``features``: the masked student's FPN maps. Returns maps shaped like them with the
        teacher's channels."""
        tokens, grids = [], []
        for i, level in enumerate(self.levels):
            x = self.phi[level](features[level])
            p = self._scale[level]
            if p > 1:  # pad so that every feature position falls into a token
                k = int(p)
                x = F.pad(x, (0, -x.shape[-1] % k, 0, -x.shape[-2] % k))
            x = self.sam[level](x)
            if self.sam_norm is not None:  # over channels, at every token
                x = self.sam_norm[level](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            n, c, h, w = x.shape
            visible = mask.at(h, w, self.token_stride).to(x.dtype)  # (N, 1, h, w)
            token = self.mask_tokens[level].to(x.dtype).view(1, c, 1, 1)
            x = x * visible + token * (1 - visible)
            x = x.flatten(2).transpose(1, 2)  # (N, h*w, C)
            pos = _sincos_position_embedding(h, w, c).to(x)
            tokens.append(x + pos + self.level_embed[i].to(x.dtype))
            grids.append((h, w))
        decoded = self._decode(tokens)
        out = {
            level: self._recover(level, y, grid, features[level].shape[-2:])
            for level, y, grid in zip(self.levels, decoded, grids)
        }
        if self.residual is not None:
            out = {level: y + self.residual[level](features[level]) for level, y in out.items()}
        return out

    def _decode(self, tokens: List[torch.Tensor]) -> List[torch.Tensor]:
        if self.one_sequence:
            lengths = [t.shape[1] for t in tokens]
            out = self.norm(self.transformer(torch.cat(tokens, dim=1)))
            return list(out.split(lengths, dim=1))
        return [self.norm(self.transformer(t)) for t in tokens]

    def _recover(self, level: str, y: torch.Tensor, grid, size) -> torch.Tensor:
        """SRM: tokens -> (N, C^T, H, W) of the level's own size."""
        n = y.shape[0]
        h, w = grid
        y = self.srm[level](y).transpose(1, 2).reshape(n, -1, h, w)
        p = self._scale[level]
        if p > 1:
            y = F.pixel_shuffle(y, int(p))
        elif p < 1:
            y = F.avg_pool2d(y, int(1 / p), ceil_mode=True)
        return y[:, :, : size[0], : size[1]]

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, patch_size={self.patch_size}, "
                f"token_stride={self.token_stride}, p={self._scale}, "
                f"sam_norm={self.sam_norm is not None}")

