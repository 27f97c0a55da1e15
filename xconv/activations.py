"""ReLU and LeakyReLU that keep a 1-bit sign mask for backward.

A plain ReLU keeps its full output for backward; once the following
convolution keeps only a sketch, that output is what still holds the memory.
The backward of (Leaky)ReLU needs only the sign of the input, so these keep
the mask ``x > 0`` packed 8 per byte. Outputs and gradients are exact.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bits import pack_bits, unpack_bits, where_bits

__all__ = ["pack_bits", "unpack_bits", "BitReLU", "BitLeakyReLU"]


class _SignMaskActivation(torch.autograd.Function):
    """``y = x if x > 0 else slope * x`` (slope 0: ReLU), saving one bit per element."""

    @staticmethod
    def forward(ctx, x, negative_slope: float, inplace: bool):
        packed = pack_bits(x > 0)
        if negative_slope == 0.0:
            out = F.relu_(x) if inplace else F.relu(x)
        else:
            out = F.leaky_relu_(x, negative_slope) if inplace else F.leaky_relu(x, negative_slope)
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(packed)
        ctx.shape, ctx.negative_slope = x.shape, negative_slope
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (packed,) = ctx.saved_tensors
        if ctx.negative_slope == 0.0:  # torch: x <= 0 ? 0 : grad, also for a non-finite grad
            return where_bits(packed, grad_out), None, None
        positive = unpack_bits(packed, ctx.shape)
        return torch.where(positive, grad_out, grad_out * ctx.negative_slope), None, None


def _needs_graph(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


class BitReLU(nn.ReLU):
    """Drop-in ``nn.ReLU`` that keeps a 1-bit mask instead of its output."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _needs_graph(input):
            return super().forward(input)
        return _SignMaskActivation.apply(input, 0.0, self.inplace)


class BitLeakyReLU(nn.LeakyReLU):
    """Drop-in ``nn.LeakyReLU`` that keeps a 1-bit mask instead of its input."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _needs_graph(input):
            return super().forward(input)
        return _SignMaskActivation.apply(input, float(self.negative_slope), self.inplace)


#: The plain torch activation each 1-bit activation replaces.
BIT_ACTIVATION_FOR = {nn.ReLU: BitReLU, nn.LeakyReLU: BitLeakyReLU}
