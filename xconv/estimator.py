"""The XConv autograd function: exact forward, exact input and bias gradients,
and an unbiased randomized estimate of the weight gradient.

For one sample b the weight gradient of a convolution is a bilinear correlation
``dW(x_b, g_b)`` of the layer input with the output gradient. With probes
``e_1..e_r`` satisfying ``E[(1/r) sum_p e_p e_p^T] = I``::

    dW  ~=  (1/r) sum_p dW(e_p, L_p),      L_p = sum_b <x_b, e_p> g_b

Forward keeps only the sketch ``S[b, p] = <x_b, e_p>`` and an integer seed;
backward redraws the probes from the seed and hands them, as a batch of r
samples, to the framework's own weight-gradient kernel
(``aten.convolution_backward``), so stride, dilation, groups, padding and
transposition all come from the native kernel.

Padding: probes live on the *unpadded* input. The layer's padding (any mode,
including the asymmetric padding of ``padding="same"``) is applied to the
probes in backward, so ``pad(x) ~= (1/r) sum_p S[b, p] pad(e_p)`` stays
unbiased for every padding mode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import probes as probe_lib
from . import rng

_convolution_backward = torch.ops.aten.convolution_backward.default

# Probes (and the per-probe temporaries of backward) are made in chunks whose
# total size stays below this fraction of the layer input, or below the floor.
_CHUNK_FRACTION_OF_INPUT = 4
_CHUNK_FLOOR_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class ConvGeometry:
    """What the native kernel needs to know about one convolution.

    ``kernel_padding`` is the symmetric zero padding handed to the kernel;
    ``pre_pad`` (an ``F.pad`` argument, last dimension first) and ``pad_mode``
    describe any padding applied to the input before the kernel instead.
    """

    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    kernel_padding: tuple[int, ...]
    pre_pad: tuple[int, ...] | None
    pad_mode: str
    transposed: bool
    output_padding: tuple[int, ...]

    @property
    def dims(self) -> int:
        return len(self.stride)

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """Apply the pre-kernel padding to a batch ``(N, C, *spatial)``."""
        if self.pre_pad is None:
            return t
        return F.pad(t, self.pre_pad, mode=self.pad_mode)

    def padded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.pre_pad is None:
            return tuple(shape)
        spatial = list(shape[2:])
        for axis in range(self.dims):  # pre_pad lists the last axis first
            left, right = self.pre_pad[2 * axis], self.pre_pad[2 * axis + 1]
            spatial[-1 - axis] += left + right
        return (*shape[:2], *spatial)

    def unpad_adjoint(self, grad_padded: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Adjoint of :meth:`pad`: map a gradient on the padded input back."""
        if self.pre_pad is None:
            return grad_padded
        if self.pad_mode == "constant":
            index = [slice(None), slice(None)]
            for axis in reversed(range(self.dims)):
                left = self.pre_pad[2 * axis]
                index.append(slice(left, left + shape[2 + self.dims - 1 - axis]))
            return grad_padded[tuple(index)]
        # Padding is linear, so its vector-Jacobian product does not depend on the
        # values it is taken at: differentiate F.pad itself at zero.
        with torch.enable_grad():
            anchor = grad_padded.new_zeros(shape, requires_grad=True)
            (grad,) = torch.autograd.grad(self.pad(anchor), anchor, grad_padded)
        return grad


def _shape_only(reference: torch.Tensor, shape) -> torch.Tensor:
    """A tensor that only carries a shape (the kernel reads no values from it)."""
    return reference.new_empty(1).expand(*shape)


def _chunk_size(probes: int, per_probe_elements: int, input_elements: int) -> int:
    budget = max(input_elements // _CHUNK_FRACTION_OF_INPUT, _CHUNK_FLOOR_ELEMENTS)
    return max(1, min(probes, budget // max(per_probe_elements, 1)))


def _chunks(probes: int, chunk: int):
    """Yield ``(chunk_index, start, count)`` covering ``range(probes)``."""
    for index, start in enumerate(range(0, probes, chunk)):
        yield index, start, min(chunk, probes - start)


class XConvFunction(torch.autograd.Function):
    """``apply(x, weight, bias, output_fn, geometry, probes, kind)``.

    ``output_fn(x, weight, bias)`` computes the layer output exactly as the plain
    layer does (so the forward is bit-identical).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, output_fn: Callable, geometry: ConvGeometry,
                probes: int, kind: str):
        out = output_fn(x, weight, bias)
        batch, channels, *spatial = x.shape
        out_spatial = out.shape[2:]
        per_probe = _per_probe_elements(kind, geometry, x.shape, out.shape, weight)
        chunk = _chunk_size(probes, per_probe, x.numel())
        seed = rng.next_call_seed()
        shape = probe_lib.probe_shape(kind, channels, tuple(spatial))
        sketch = torch.cat([
            _sketch(x, probe_lib.draw_probes(kind, count, shape, seed=probe_lib.chunk_seed(seed, index),
                                             dtype=x.dtype, device=x.device), kind)
            for index, _, count in _chunks(probes, chunk)
        ], dim=0 if kind == "channel" else 1)
        ctx.save_for_backward(sketch, weight)
        ctx.geometry, ctx.kind, ctx.probes = geometry, kind, probes
        ctx.seed, ctx.chunk = seed, chunk
        ctx.x_shape, ctx.out_spatial = tuple(x.shape), tuple(out_spatial)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        sketch, weight = ctx.saved_tensors
        geometry = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _input_gradient(grad_out, weight.to(grad_out.dtype), geometry, ctx.x_shape)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_gradient_estimate(ctx, grad_out, sketch.to(grad_out.dtype), weight)
            grad_w = grad_w.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=[0, *range(2, grad_out.dim())]).to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None


def _per_probe_elements(kind, geometry: ConvGeometry, x_shape, out_shape, weight) -> int:
    """Elements of the temporaries one probe needs in backward."""
    batch, channels = x_shape[:2]
    padded_spatial = math.prod(geometry.padded_shape(tuple(x_shape))[2:])
    kernel_taps = math.prod(weight.shape[2:])
    out_channels = out_shape[1]
    if kind == "channel":
        return padded_spatial + batch * out_channels * kernel_taps
    return channels * padded_spatial + out_channels * math.prod(out_shape[2:])


def _sketch(x: torch.Tensor, e: torch.Tensor, kind: str) -> torch.Tensor:
    """Inner products of every sample (channel) with every probe."""
    x_flat = x.flatten(2)  # (B, C_in, N), a view for contiguous and channels_last input
    if kind == "channel":
        return torch.einsum("bcn,pn->pbc", x_flat, e.flatten(1))  # (r, B, C_in)
    return torch.einsum("bcn,pcn->bp", x_flat, e.flatten(2))  # (B, r)


def _input_gradient(grad_out, weight, geometry: ConvGeometry, x_shape) -> torch.Tensor:
    padded_shape = geometry.padded_shape(x_shape)
    grad_x, _, _ = _convolution_backward(
        grad_out, _shape_only(grad_out, padded_shape), weight, None,
        list(geometry.stride), list(geometry.kernel_padding), list(geometry.dilation),
        geometry.transposed, list(geometry.output_padding), geometry.groups, [True, False, False])
    return geometry.unpad_adjoint(grad_x, x_shape)


def _weight_gradient_estimate(ctx, grad_out, sketch, weight) -> torch.Tensor:
    geometry, kind = ctx.geometry, ctx.kind
    channels, spatial = ctx.x_shape[1], ctx.x_shape[2:]
    shape = probe_lib.probe_shape(kind, channels, tuple(spatial))
    grad_w = torch.zeros(weight.shape, dtype=grad_out.dtype, device=grad_out.device)
    for index, start, count in _chunks(ctx.probes, ctx.chunk):
        e = probe_lib.draw_probes(kind, count, shape, seed=probe_lib.chunk_seed(ctx.seed, index),
                                  dtype=grad_out.dtype, device=grad_out.device)
        if kind == "channel":
            grad_w += _channel_probe_term(geometry, grad_out, e, sketch[start:start + count], weight.shape)
        else:
            grad_w += _full_probe_term(geometry, grad_out, e, sketch[:, start:start + count], weight.shape)
    return grad_w.div_(ctx.probes)


def _full_probe_term(geometry: ConvGeometry, grad_out, e, sketch, weight_shape) -> torch.Tensor:
    """``sum_p dW(e_p, L_p)`` for probes over channels and positions.

    e: (r, C_in, *spatial); sketch: (B, r); grad_out: (B, C_out, *out_spatial).
    """
    batch, out_channels, *out_spatial = grad_out.shape
    count = e.shape[0]
    combined = sketch.T @ grad_out.reshape(batch, -1)  # (r, C_out * prod(out_spatial))
    combined = combined.view(count, out_channels, *out_spatial)  # L_p, a batch of r output gradients
    if not geometry.transposed:
        e = geometry.pad(e)
    _, grad_w, _ = _convolution_backward(
        combined, e, _shape_only(grad_out, weight_shape), None,
        list(geometry.stride), list(geometry.kernel_padding), list(geometry.dilation),
        geometry.transposed, list(geometry.output_padding), geometry.groups, [False, True, False])
    return grad_w


def _channel_probe_term(geometry: ConvGeometry, grad_out, e, sketch, weight_shape) -> torch.Tensor:
    """``sum_p sum_b S[p, b, c] dW(e_p, g_b[o])`` for one spatial probe shared by channels.

    The native kernel correlates every probe with every (sample, output channel)
    pair at once: the probes become the r input channels of a batch-1
    convolution whose B*C_out output channels are the output gradient's.
    e: (r, *spatial); sketch: (r, B, C_in); grad_out: (B, C_out, *out_spatial).
    """
    batch, out_channels, *out_spatial = grad_out.shape
    count, taps = e.shape[0], math.prod(weight_shape[2:])
    groups = geometry.groups
    probes_as_channels = e.unsqueeze(0)  # (1, r, *spatial)
    if not geometry.transposed:
        probes_as_channels = geometry.pad(probes_as_channels)
    outputs_as_channels = grad_out.reshape(1, batch * out_channels, *out_spatial)  # (1, B*C_out, *out_spatial)
    kernel = weight_shape[2:]
    if geometry.transposed:
        trick_weight_shape = (count, batch * out_channels, *kernel)
    else:
        trick_weight_shape = (batch * out_channels, count, *kernel)
    _, correlations, _ = _convolution_backward(
        outputs_as_channels, probes_as_channels, _shape_only(grad_out, trick_weight_shape), None,
        list(geometry.stride), list(geometry.kernel_padding), list(geometry.dilation),
        geometry.transposed, list(geometry.output_padding), 1, [False, True, False])
    in_per_group = sketch.shape[2] // groups
    out_per_group = out_channels // groups
    sketch = sketch.reshape(count, batch, groups, in_per_group)  # (r, B, G, C_in/G)
    if geometry.transposed:
        correlations = correlations.reshape(count, batch, groups, out_per_group, taps)  # (r, B, G, C_out/G, K)
        grad_w = torch.einsum("pbgc,pbgok->gcok", sketch, correlations)  # (G, C_in/G, C_out/G, K)
    else:
        correlations = correlations.reshape(batch, groups, out_per_group, count, taps)  # (B, G, C_out/G, r, K)
        grad_w = torch.einsum("pbgc,bgopk->gock", sketch, correlations)  # (G, C_out/G, C_in/G, K)
    return grad_w.reshape(weight_shape)
