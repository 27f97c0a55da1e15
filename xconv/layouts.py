"""Sketch layouts: what the forward keeps of a layer input, and how backward turns it into dW.

Notation: input ``x`` of shape ``(B, C_in, *spatial)``; output gradient ``g`` of
shape ``(B, C_out, *out_spatial)``; ``r`` probes ``e_1..e_r``; ``dW(u, v)`` the
weight gradient of the convolution at input ``u`` and output gradient ``v``
(bilinear in ``u`` and ``v``). The exact gradient is ``dW = sum_b dW(x_b, g_b)``.

A layout replaces the input by its reconstruction from the sketch ``S``,
``x ~= (1/r) sum_p S_p e_p``, unbiased whenever ``E[(1/r) sum_p e_p e_p^T] = I``,
and moves the sum over samples inside ``dW`` so that backward calls the native
weight-gradient kernel (``aten.convolution_backward``) once per chunk of probes::

    FULL     e_p: (C_in, *spatial)      S[b, p] = <x_b, e_p>            r numbers per sample
             dW ~= (1/r) sum_p dW(e_p, L_p),  L_p = sum_b S[b, p] g_b

    CHANNEL  e_p: (*spatial), the same  S[p, b, c] = <x_{b,c}, e_p>     r * C_in numbers per sample
             for every input channel
             dW[o, c, k] ~= (1/r) sum_p sum_b S[p, b, c] corr(g_{b,o}, e_p)[k]

Each method gets the sketch of one chunk of probes and returns the chunk's sum
over ``p``; the estimator adds the chunks and divides by ``r``. Probes live on the
unpadded input: the layer's padding (``geometry.pad``) is applied to them here.
A probe kind (:mod:`xconv.probes`) names one of these layouts.

Two orders of the same sum. ``dW`` is bilinear, so ``(1/r) sum_p dW(e_p, L_p)`` (FULL) and
``dW(x~, g)`` with ``x~ = (1/r) sum_p S_p e_p`` are one number computed in two orders (CHANNEL
likewise, per input channel). ``weight_term`` is the first: the kernel sees r probes in place of
B samples (FULL) or r input channels in place of C_in (CHANNEL), so its work grows with r.
``reconstruct`` gives ``x~`` (times r) for the second, one kernel call of the exact layer's size
plus ``B C_in r N`` multiply-adds to rebuild ``x~``: fewer when r exceeds B (FULL) or C_in
(CHANNEL), e.g. a first layer on RGB images. :func:`weight_term_macs` and
:func:`reconstruction_macs` count both; the estimator takes the cheaper.
"""
from __future__ import annotations

import math

import torch

__all__ = ["SketchLayout", "ChannelLayout", "FullLayout", "CHANNEL", "FULL"]

convolution_backward = torch.ops.aten.convolution_backward.default


def shape_only(reference: torch.Tensor, shape) -> torch.Tensor:
    """A tensor that only carries a shape (the kernel reads no values from it)."""
    return reference.new_empty(1).expand(*shape)


def weight_gradient(geometry, grad_out, input, weight_shape, groups: int) -> torch.Tensor:
    """The native kernel's weight gradient of the layer's convolution (with ``groups``) at ``input``."""
    _, grad_w, _ = convolution_backward(
        grad_out, input, shape_only(grad_out, weight_shape), None,
        list(geometry.stride), list(geometry.kernel_padding), list(geometry.dilation),
        geometry.transposed, list(geometry.output_padding), groups, [False, True, False])
    return grad_w


def kernel_positions(geometry, x_shape, out_shape) -> int:
    """Positions the weight-gradient kernel sums over per tap: the output's (the input's when transposed)."""
    return math.prod((x_shape if geometry.transposed else out_shape)[2:])


def reconstruction_macs(geometry, x_shape, out_shape, weight_shape, probes: int) -> int:
    """Multiply-adds of rebuilding ``x~`` (``B C_in r N``) and one exact-size weight-gradient call."""
    rebuild = x_shape[0] * x_shape[1] * probes * math.prod(x_shape[2:])
    return rebuild + x_shape[0] * math.prod(weight_shape) * kernel_positions(geometry, x_shape, out_shape)


class SketchLayout:
    """How probes are laid out over an input, and the sketch maths that follows from it.

    ``geometry`` is the layer's :class:`xconv.estimator.ConvGeometry`.
    """

    name: str
    probe_dim: int  # the sketch's probe axis: chunks are concatenated and sliced along it
    sample_dim: int  # the sketch's sample axis

    def probe_shape(self, channels: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one probe for an input with ``channels`` x ``spatial``."""
        raise NotImplementedError

    def numbers_per_sample(self, probes: int, channels: int) -> int:
        """Numbers the sketch keeps per sample with ``probes`` probes."""
        raise NotImplementedError

    def sketch(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Inner products of the input with a chunk of probes ``e`` (``(r, *probe_shape)``)."""
        raise NotImplementedError

    def per_probe_elements(self, geometry, x_shape, out_shape, weight_shape) -> int:
        """Elements of the temporaries one probe needs in backward (sets the chunk size)."""
        raise NotImplementedError

    def weight_term(self, geometry, grad_out, e, sketch, weight_shape) -> torch.Tensor:
        """The chunk's ``sum_p`` of the weight-gradient estimate (not yet divided by ``r``)."""
        raise NotImplementedError

    def weight_term_macs(self, geometry, x_shape, out_shape, weight_shape, probes: int) -> int:
        """Multiply-adds of :meth:`weight_term` over all ``probes``."""
        raise NotImplementedError

    def reconstruct(self, sketch, e, x_shape) -> torch.Tensor:
        """The chunk's ``sum_p S_p e_p`` for the sketch's samples, shaped ``(B', *x_shape[1:])``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.name} sketch layout>"


class FullLayout(SketchLayout):
    """One probe over channels and positions together: ``S[b, p] = <x_b, e_p>``, shape ``(B, r)``."""

    name, probe_dim, sample_dim = "full", 1, 0

    def probe_shape(self, channels, spatial):
        return (channels, *spatial)

    def numbers_per_sample(self, probes, channels):
        return probes

    def sketch(self, x, e):
        x_flat = x.flatten(2)  # (B, C_in, N), a view for contiguous and channels_last input
        return torch.einsum("bcn,pcn->bp", x_flat, e.flatten(2))  # (B, r)

    def per_probe_elements(self, geometry, x_shape, out_shape, weight_shape):
        padded_spatial = math.prod(geometry.padded_shape(tuple(x_shape))[2:])
        return x_shape[1] * padded_spatial + out_shape[1] * math.prod(out_shape[2:])

    def weight_term(self, geometry, grad_out, e, sketch, weight_shape):
        """``sum_p dW(e_p, L_p)``: one kernel call with the r probes as a batch of r inputs.

        e: (r, C_in, *spatial); sketch: (B, r); grad_out: (B, C_out, *out_spatial).
        """
        batch, out_channels, *out_spatial = grad_out.shape
        count = e.shape[0]
        combined = sketch.T @ grad_out.reshape(batch, -1)  # (r, C_out * prod(out_spatial))
        combined = combined.view(count, out_channels, *out_spatial)  # L_p, a batch of r output gradients
        if not geometry.transposed:
            e = geometry.pad(e)
        return weight_gradient(geometry, combined, e, weight_shape, geometry.groups)

    def weight_term_macs(self, geometry, x_shape, out_shape, weight_shape, probes):
        combine = probes * x_shape[0] * math.prod(out_shape[1:])  # L_p
        return combine + probes * math.prod(weight_shape) * kernel_positions(geometry, x_shape, out_shape)

    def reconstruct(self, sketch, e, x_shape):
        """e: (r, C_in, *spatial); sketch: (B', r)."""
        return (sketch @ e.flatten(1)).view(sketch.shape[0], *x_shape[1:])


class ChannelLayout(SketchLayout):
    """One probe over the positions, shared by every input channel (the "independent" mode of the
    paper's code): ``S[p, b, c] = <x_{b,c}, e_p>``, shape ``(r, B, C_in)``."""

    name, probe_dim, sample_dim = "channel", 0, 1

    def probe_shape(self, channels, spatial):
        return tuple(spatial)

    def numbers_per_sample(self, probes, channels):
        return probes * channels

    def sketch(self, x, e):
        x_flat = x.flatten(2)  # (B, C_in, N), a view for contiguous and channels_last input
        return torch.einsum("bcn,pn->pbc", x_flat, e.flatten(1))  # (r, B, C_in)

    def per_probe_elements(self, geometry, x_shape, out_shape, weight_shape):
        padded_spatial = math.prod(geometry.padded_shape(tuple(x_shape))[2:])
        return padded_spatial + x_shape[0] * out_shape[1] * math.prod(weight_shape[2:])

    def weight_term(self, geometry, grad_out, e, sketch, weight_shape):
        """``sum_p sum_b S[p, b, c] corr(g_{b,o}, e_p)`` for each weight ``(o, c)`` of a group.

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
        correlations = weight_gradient(geometry, outputs_as_channels, probes_as_channels, trick_weight_shape, 1)
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

    def weight_term_macs(self, geometry, x_shape, out_shape, weight_shape, probes):
        batch, taps = x_shape[0], math.prod(weight_shape[2:])
        correlate = probes * batch * out_shape[1] * taps * kernel_positions(geometry, x_shape, out_shape)
        return correlate + probes * batch * math.prod(weight_shape)  # the einsum with the sketch

    def reconstruct(self, sketch, e, x_shape):
        """e: (r, *spatial); sketch: (r, B', C_in)."""
        return torch.einsum("pbc,pn->bcn", sketch, e.flatten(1)).view(sketch.shape[1], *x_shape[1:])


CHANNEL = ChannelLayout()
FULL = FullLayout()
