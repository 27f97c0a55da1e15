"""A plain Ronneberger U-Net in 2D or 3D: no normalisation, ReLU, max-pool down, bilinear up.

The paper's U-Net of its gradient-error and memory studies (Fig. 5, 9) is the
Ronneberger layout with base width 32 and depth 4 (widths 32, 64, ..., 512), no
normalisation layers, ReLU modules and bilinear upsampling, trained with MSE on
synthetic regression data. ``dims=3`` gives the same network with ``Conv3d``,
3D max-pooling and trilinear upsampling (the paper's 3D study uses MONAI's
U-Net; this is our small stand-in for exercising the 3D layers).

Layout (``depth`` = number of 2x downsamplings):

* down: ``DoubleConv(in -> w0)``, then ``depth`` times max-pool 2 and
  ``DoubleConv(w_{i-1} -> w_i)`` with ``w_i = base * 2**i``;
* up: for ``i = depth-1 .. 0``: upsample to the skip's size, concatenate
  ``[skip, up]`` along channels, ``DoubleConv(w_i + w_{i+1} -> w_i)``;
* head: 1x1 convolution to ``out_channels``.

``DoubleConv`` is conv3x3 (padding 1) - ReLU - conv3x3 - ReLU, with ``nn.ReLU``
modules so that ``xconv.convert(..., relu=True)`` can swap them for 1-bit ReLUs.
Input sizes must be divisible by ``2**depth``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..rules import require_int

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_UPSAMPLE_MODE = {2: "bilinear", 3: "trilinear"}


class DoubleConv(nn.Sequential):
    """conv3x3 - ReLU - conv3x3 - ReLU (3x3x3 in 3D), zero padding 1, with bias."""

    def __init__(self, in_channels: int, out_channels: int, dims: int):
        conv = _CONV[dims]
        super().__init__(conv(in_channels, out_channels, 3, padding=1), nn.ReLU(),
                         conv(out_channels, out_channels, 3, padding=1), nn.ReLU())


class PlainUNet(nn.Module):
    """``model(x (B, in, *spatial)) -> (B, out, *spatial)``; ``spatial`` divisible by ``2**depth``.

    Args:
        in_channels, out_channels: image channels in and out.
        base: width of the first level (the paper: 32).
        depth: number of 2x downsamplings (the paper: 4, i.e. widths 32..512).
        dims: 2 (``Conv2d``, bilinear) or 3 (``Conv3d``, trilinear).
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, base: int = 32, depth: int = 4,
                 dims: int = 2):
        super().__init__()
        require_int("in_channels", in_channels, 1)
        require_int("out_channels", out_channels, 1)
        require_int("base", base, 1)
        require_int("depth", depth, 1)
        if dims not in _CONV:
            raise ValueError(f"dims={dims!r}: must be 2 or 3")
        self.dims, self.depth = dims, depth
        widths = [base * 2 ** level for level in range(depth + 1)]
        self.down = nn.ModuleList([DoubleConv(in_channels, widths[0], dims)] +
                                  [DoubleConv(widths[i - 1], widths[i], dims) for i in range(1, depth + 1)])
        self.pool = _POOL[dims](2)
        self.up = nn.ModuleList(DoubleConv(widths[i] + widths[i + 1], widths[i], dims)
                                for i in reversed(range(depth)))
        self.head = _CONV[dims](widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        divisor = 2 ** self.depth
        if any(size % divisor for size in x.shape[2:]):
            raise ValueError(f"input spatial size {tuple(x.shape[2:])}: every side must be divisible by "
                             f"2**depth = {divisor}")
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()  # the deepest level is the start of the up path, not a skip
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode=_UPSAMPLE_MODE[self.dims], align_corners=False)
            x = block(torch.cat([skip, x], dim=1))  # (B, w_i + w_{i+1}, *spatial_i)
        return self.head(x)
