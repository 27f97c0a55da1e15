"""A fixed, differentiable Lanczos2 downsampler (Deep Image Prior's ``Downsampler``).

DIP's super-resolution loss compares the downsampled network output with the
low-resolution image; the downsampler is a per-channel strided convolution with
a Lanczos kernel of support 2 (``kernel_type='lanczos2'``, ``phase=0.5``,
``preserve_size=True``: replicate padding so that ``H -> H / factor``).
It has no parameters (the kernel is a buffer) and is not an ``nn.Conv2d``, so
``xconv.convert`` leaves it alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def lanczos2_kernel(factor: int, support: int = 2) -> torch.Tensor:
    """The normalised 2D kernel, ``(4 * factor, 4 * factor)`` (DIP's ``get_kernel`` with phase 0.5)."""
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor={factor!r}: must be an integer >= 1")
    width = 4 * factor + 1  # DIP's kernel_width; phase 0.5 drops one tap
    center = (width + 1) / 2
    taps = torch.arange(1, width, dtype=torch.float64)
    distance = (taps + 0.5 - center).abs() / factor  # (width - 1,) tap offsets in low-res pixels
    nonzero = distance != 0
    safe = torch.where(nonzero, distance, torch.ones_like(distance))
    values = support * torch.sin(math.pi * safe) * torch.sin(math.pi * safe / support) / (math.pi * safe) ** 2
    profile = torch.where(nonzero, values, torch.ones_like(values))  # (width - 1,)
    kernel = profile[:, None] * profile[None, :]  # (width - 1, width - 1), separable as in DIP
    return (kernel / kernel.sum()).float()


class Lanczos2Downsampler(nn.Module):
    """``(N, C, H, W) -> (N, C, H / factor, W / factor)``, each channel filtered alone."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", lanczos2_kernel(factor)[None, None], persistent=False)  # (1, 1, k, k)
        size = self.kernel.shape[-1]
        self.pad = (size - factor) // 2  # even kernel: DIP's preserve_size padding

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = image.shape
        if height % self.factor or width % self.factor:
            raise ValueError(f"image size {height}x{width} is not divisible by the factor {self.factor}")
        padded = F.pad(image, (self.pad,) * 4, mode="replicate")
        weight = self.kernel.to(image.dtype).expand(channels, 1, -1, -1)  # (C, 1, k, k): depthwise
        return F.conv2d(padded, weight, stride=self.factor, groups=channels)  # (N, C, H/f, W/f)
