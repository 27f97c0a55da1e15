"""XLinear: ``nn.Linear`` whose weight gradient is estimated from a sketch of its input.

The maths (the FULL layout of :mod:`xconv.layouts` with one position)
--------------------------------------------------------------------
A linear layer maps rows ``x_n`` (``in`` features; every leading axis of the input
counts as batch, ``N`` rows in all) to ``y_n = W x_n + b``. Its weight gradient is
``dW = sum_n g_n x_n^T = G^T X`` with ``X`` the ``(N, in)`` input rows and ``G`` the
``(N, out)`` output gradients. With ``r`` probes ``e_p`` over the features, stacked
as ``E`` ``(r, in)`` and satisfying ``E[(1/r) E^T E] = I``, forward keeps the sketch
``S = X E^T`` (``(N, r)``: ``S[n, p] = <x_n, e_p>``) instead of ``X`` and backward
forms::

    dW ~= (1/r) (G^T S) E = G^T X (E^T E / r)        E[.] = G^T X = dW

so the estimate is unbiased, like the convolutions'. It keeps ``r`` numbers per row
against ``in``: it saves memory when ``r < in``. Channel probes (one probe per
position, shared by the channels) have one position here and would keep ``r * in``
numbers: a linear layer takes only probe kinds over the features (the FULL layout:
"gaussian", "rademacher", "orthogonal").

The output is ``F.linear`` itself (bit-identical), and the input and bias gradients
are torch's (``G W`` and ``sum_n g_n``, computed as torch's linear backward does).
Backward draws the probes again from the seed forward used (:mod:`xconv.rng`).

Like the XConv layers it follows the rule "never more than exact": a call whose
sketch would not be smaller than its input (``r >= in``) keeps the input and
computes torch's exact gradients, and is counted in ``layer.calls``.
``xconv.convert(model, probes=..., linear="gaussian")`` converts a model's linear
layers; by default they are left alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import probes as probe_lib
from . import rng
from .layers import DEFAULT_PROBES, XConvMixin
from .layouts import FULL

__all__ = ["XLinear", "XLinearFunction", "LINEAR_PROBE", "check_linear_probe"]

#: The default probe kind of a linear layer.
LINEAR_PROBE = "gaussian"


def check_linear_probe(probe) -> str:
    """``probe`` if it names a probe kind over the features (FULL layout), else a ValueError."""
    kind = probe_lib.probe_kind(probe)
    if kind.layout is not FULL:
        allowed = ", ".join(repr(name) for name, k in probe_lib.PROBE_REGISTRY.items() if k.layout is FULL)
        raise ValueError(f"a linear layer's probe must be a kind over its features ({allowed}), got {probe!r}: "
                         f"{kind.layout.name} probes would keep more numbers than the input")
    return probe


class XLinearFunction(torch.autograd.Function):
    """``apply(x, weight, bias, probes, probe)``: ``F.linear(x, weight, bias)``, keeping ``S = X E^T``."""

    @staticmethod
    def forward(ctx, x, weight, bias, probes: int, probe: str):
        out = F.linear(x, weight, bias)
        kind = probe_lib.probe_kind(probe)
        seed = rng.next_call_seed()
        rows = x.reshape(-1, x.shape[-1])
        sketch = rows @ probe_lib.call_probes(kind, probes, x.shape[-1:], seed, 0, x).T  # (N, r)
        ctx.save_for_backward(sketch, weight)
        ctx.kind, ctx.probes, ctx.seed = kind, probes, seed
        ctx.x_shape, ctx.has_bias = tuple(x.shape), bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        sketch, weight = ctx.saved_tensors
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        grads = grad_out.reshape(-1, grad_out.shape[-1])  # G, (N, out)
        grad_x = grads.mm(weight.to(grads.dtype)).view(ctx.x_shape) if needs_x else None
        grad_b = grads.sum(0).to(weight.dtype) if ctx.has_bias and needs_b else None
        grad_w = None
        if needs_w:
            probes = probe_lib.call_probes(ctx.kind, ctx.probes, ctx.x_shape[-1:], ctx.seed, 0, grads)  # E, (r, in)
            weights = grads.T.mm(sketch.to(grads.dtype)).div_(ctx.probes)  # (G^T S) / r, (out, r)
            grad_w = weights.mm(probes).to(weight.dtype)  # no (out, in) temporary besides the gradient
        return grad_x, grad_w, grad_b, None, None


class XLinear(XConvMixin, nn.Linear):
    """Drop-in ``nn.Linear`` whose weight gradient is estimated from ``probes`` probes over the features.

    Takes every argument of ``nn.Linear`` plus keyword-only ``probes`` (int >= 0, 0 = exact
    backprop), ``probe`` (a kind over the features: "gaussian" (default), "rademacher",
    "orthogonal") and ``fallback`` (default True: a call with ``probes >= in_features`` keeps
    its input and computes torch's exact gradients). ``layer.calls`` counts what the calls did.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 probes: int = DEFAULT_PROBES, probe: str = LINEAR_PROBE, fallback: bool = True):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.set_xconv(probes=probes, probe=probe, fallback=fallback)

    def set_xconv(self, *, probes: int, probe: str, fallback: bool | None = None) -> None:
        super().set_xconv(probes=probes, probe=check_linear_probe(probe), fallback=fallback)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.sketches(input):  # the plain layer: exact backprop, torch's own saved tensors
            return F.linear(input, self.weight, self.bias)
        return XLinearFunction.apply(input, self.weight, self.bias, self.probes, self.probe)
