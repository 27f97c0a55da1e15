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
transposition all come from the native kernel. That is the ``FULL`` layout of
:mod:`xconv.layouts`; the ``CHANNEL`` layout keeps one inner product per input
channel instead. The probe kind (:mod:`xconv.probes`) names the layout. Where that
is more work than the exact gradient's (r above the batch for FULL, above C_in for
CHANNEL: a first layer on RGB images), backward instead rebuilds
``x~ = (1/r) sum_p S[:, p] e_p`` a slab of samples at a time and calls the kernel
once on it: the same estimate summed in the other order (:mod:`xconv.layouts`).

Padding: probes live on the *unpadded* input. The layer's padding (any mode,
including the asymmetric padding of ``padding="same"``) is applied to the
probes in backward, so ``pad(x) ~= (1/r) sum_p S[b, p] pad(e_p)`` stays
unbiased for every padding mode.

The input and bias gradients come from one call of the same native kernel the
plain layer's backward calls, so they are bit-identical to the plain layer's.
An empty batch has an exact weight gradient of zero (a sum over no samples).

The layers call this Function only where the sketch is smaller than the input;
elsewhere they fall back to the plain layer (:mod:`xconv.layers`, "Never more
than exact"), which keeps the input and gives torch's exact gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import probes as probe_lib
from . import rng
from .layouts import convolution_backward, reconstruction_macs, shape_only, weight_gradient

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


def _budget(input_elements: int) -> int:
    return max(input_elements // _CHUNK_FRACTION_OF_INPUT, _CHUNK_FLOOR_ELEMENTS)


def _chunk_size(probes: int, per_probe_elements: int, input_elements: int) -> int:
    return max(1, min(probes, _budget(input_elements) // max(per_probe_elements, 1)))


def _chunks(probes: int, chunk: int):
    """Yield ``(chunk_index, start, count)`` covering ``range(probes)``."""
    for index, start in enumerate(range(0, probes, chunk)):
        yield index, start, min(chunk, probes - start)


class XConvFunction(torch.autograd.Function):
    """``apply(x, weight, bias, output_fn, geometry, probes, probe)``.

    ``output_fn(x, weight, bias)`` computes the layer output exactly as the plain
    layer does (so the forward is bit-identical). ``probe`` names a registered
    probe kind (:mod:`xconv.probes`); its layout (:mod:`xconv.layouts`) computes
    the sketch here and the weight-gradient terms in backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, output_fn: Callable, geometry: ConvGeometry,
                probes: int, probe: str):
        kind = probe_lib.probe_kind(probe)
        layout = kind.layout
        out = output_fn(x, weight, bias)
        channels, spatial = x.shape[1], x.shape[2:]
        out_spatial = out.shape[2:]
        shape = kind.probe_shape(channels, spatial)
        # rebuilding the input needs only the probes themselves per probe; the batched terms more
        rebuild = _by_reconstruction(layout, geometry, x.shape, out.shape, weight.shape, probes)
        per_probe = math.prod(shape) if rebuild else layout.per_probe_elements(geometry, x.shape, out.shape,
                                                                               weight.shape)
        chunk = _chunk_size(probes, per_probe, x.numel())
        seed = rng.next_call_seed()
        sketch = torch.cat([layout.sketch(x, probe_lib.call_probes(kind, count, shape, seed, index, x))
                            for index, _, count in _chunks(probes, chunk)], dim=layout.probe_dim)
        ctx.save_for_backward(sketch, weight)
        ctx.geometry, ctx.kind, ctx.probes = geometry, kind, probes
        ctx.seed, ctx.chunk, ctx.rebuild = seed, chunk, rebuild
        ctx.x_shape, ctx.out_spatial = tuple(x.shape), tuple(out_spatial)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        sketch, weight = ctx.saved_tensors
        geometry = ctx.geometry
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        grad_x, grad_b = _input_and_bias_gradients(grad_out, weight.to(grad_out.dtype), geometry, ctx.x_shape,
                                                   needs_x, ctx.has_bias and needs_b)
        grad_w = None
        if needs_w:
            grad_w = _weight_gradient_estimate(ctx, grad_out, sketch.to(grad_out.dtype), weight)
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None


def _input_and_bias_gradients(grad_out, weight, geometry: ConvGeometry, x_shape, needs_x: bool, needs_b: bool):
    """The exact input and bias gradients (None where not needed), from one call of the native
    kernel, as the plain layer's backward computes them (so they are bit-identical to it)."""
    if not (needs_x or needs_b):
        return None, None
    padded_shape = geometry.padded_shape(x_shape)
    grad_x, _, grad_b = convolution_backward(
        grad_out, shape_only(grad_out, padded_shape), weight, [grad_out.shape[1]],
        list(geometry.stride), list(geometry.kernel_padding), list(geometry.dilation),
        geometry.transposed, list(geometry.output_padding), geometry.groups, [needs_x, False, needs_b])
    if needs_x:
        grad_x = geometry.unpad_adjoint(grad_x, x_shape)
    return grad_x, grad_b


def _by_reconstruction(layout, geometry, x_shape, out_shape, weight_shape, probes: int) -> bool:
    """Whether rebuilding ``x~`` costs fewer multiply-adds than the batched-probe terms (:mod:`xconv.layouts`)."""
    return (reconstruction_macs(geometry, x_shape, out_shape, weight_shape, probes)
            < layout.weight_term_macs(geometry, x_shape, out_shape, weight_shape, probes))


def _weight_gradient_estimate(ctx, grad_out, sketch, weight) -> torch.Tensor:
    kind, layout = ctx.kind, ctx.kind.layout
    shape = kind.probe_shape(ctx.x_shape[1], ctx.x_shape[2:])
    grad_w = torch.zeros(weight.shape, dtype=grad_out.dtype, device=grad_out.device)
    if grad_out.shape[0] == 0:  # an empty batch: the exact gradient, a sum over no samples, is zero
        return grad_w
    if ctx.rebuild:
        return _estimate_by_reconstruction(ctx, grad_out, sketch, grad_w, shape).div_(ctx.probes)
    for index, start, count in _chunks(ctx.probes, ctx.chunk):
        e = probe_lib.call_probes(kind, count, shape, ctx.seed, index, grad_out)
        grad_w += layout.weight_term(ctx.geometry, grad_out, e, sketch.narrow(layout.probe_dim, start, count),
                                     weight.shape)
    return grad_w.div_(ctx.probes)


def _estimate_by_reconstruction(ctx, grad_out, sketch, grad_w, shape) -> torch.Tensor:
    """``dW(sum_p S_p e_p, g)`` added to ``grad_w``, a slab of samples at a time (the rebuilt input of a
    slab stays within the chunk budget; the probes are redrawn for each slab)."""
    kind, layout, geometry = ctx.kind, ctx.kind.layout, ctx.geometry
    batch = ctx.x_shape[0]
    rows = max(1, _budget(math.prod(ctx.x_shape)) // math.prod(geometry.padded_shape(ctx.x_shape)[1:]))
    for first in range(0, batch, rows):
        samples = sketch.narrow(layout.sample_dim, first, min(rows, batch - first))
        rebuilt = None
        for index, start, count in _chunks(ctx.probes, ctx.chunk):
            e = probe_lib.call_probes(kind, count, shape, ctx.seed, index, grad_out)
            part = layout.reconstruct(samples.narrow(layout.probe_dim, start, count), e, ctx.x_shape)
            rebuilt = part if rebuilt is None else rebuilt.add_(part)
        if not geometry.transposed:
            rebuilt = geometry.pad(rebuilt)
        grad_w += weight_gradient(geometry, grad_out.narrow(0, first, rebuilt.shape[0]), rebuilt,
                                  grad_w.shape, geometry.groups)
    return grad_w
