"""Drop-in XConv layers: subclasses of torch's convolutions.

Each takes every argument of its parent plus keyword-only ``probes`` (0 =
exact backprop) and ``probe`` (the probe kind). The forward output is computed
by the parent's own code, so it is bit-identical; only the weight gradient is
estimated. The estimator is used when ``probes > 0``, autograd is recording and
the weight requires a gradient; otherwise the layer is the plain layer.

Like torch's convolutions, every layer takes batched ``(B, C, *spatial)`` and
unbatched ``(C, *spatial)`` input; the estimator treats an unbatched input as a
batch of one and returns the unbatched shape, as torch does.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_probe_kind, check_probes
from .estimator import ConvGeometry, XConvFunction

__all__ = [
    "XConvMixin", "XConv1d", "XConv2d", "XConv3d",
    "XConvTranspose1d", "XConvTranspose2d", "XConvTranspose3d",
]

DEFAULT_PROBES = 16
DEFAULT_PROBE = "channel"


class XConvMixin:
    """XConv settings shared by every layer; also set by :func:`xconv.convert`."""

    probes: int
    probe: str

    def set_xconv(self, *, probes: int, probe: str) -> None:
        self.probes = check_probes(probes)
        self.probe = check_probe_kind(probe)

    def uses_estimator(self) -> bool:
        return self.probes > 0 and self.weight.requires_grad and torch.is_grad_enabled()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, probes={self.probes}, probe={self.probe!r}"

    def estimate(self, input: torch.Tensor, output_fn, geometry: ConvGeometry) -> torch.Tensor:
        """The output through :class:`XConvFunction`; an unbatched ``(C, *spatial)`` input goes
        through as a batch of one (as torch's own convolutions do) and comes back unbatched."""
        unbatched = input.dim() == len(self.kernel_size) + 1
        batch = input.unsqueeze(0) if unbatched else input
        out = XConvFunction.apply(batch, self.weight, self.bias, output_fn, geometry, self.probes, self.probe)
        return out.squeeze(0) if unbatched else out


class _XConvNd(XConvMixin):
    def geometry(self) -> ConvGeometry:
        dims = len(self.kernel_size)
        reversed_padding = tuple(self._reversed_padding_repeated_twice)  # last axis first, (left, right)
        lefts, rights = reversed_padding[0::2], reversed_padding[1::2]
        if self.padding_mode == "zeros" and lefts == rights:
            kernel_padding, pre_pad, mode = tuple(reversed(lefts)), None, "constant"
        else:  # padding modes other than zeros, and the asymmetric padding of "same"
            kernel_padding, pre_pad = (0,) * dims, reversed_padding
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return ConvGeometry(
            stride=tuple(self.stride), dilation=tuple(self.dilation), groups=self.groups,
            kernel_padding=kernel_padding, pre_pad=pre_pad, pad_mode=mode,
            transposed=False, output_padding=(0,) * dims)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.uses_estimator():
            return self._conv_forward(input, self.weight, self.bias)
        return self.estimate(input, self._conv_forward, self.geometry())


class _XConvTransposeNd(XConvMixin):
    _functional = None  # F.conv_transposeNd, set by subclasses

    def geometry(self, output_padding: tuple[int, ...]) -> ConvGeometry:
        return ConvGeometry(
            stride=tuple(self.stride), dilation=tuple(self.dilation), groups=self.groups,
            kernel_padding=tuple(self.padding), pre_pad=None, pad_mode="constant",
            transposed=True, output_padding=tuple(output_padding))

    def output_function(self, output_padding: tuple[int, ...]):
        """``f(x, weight, bias)`` computing this layer's output as the plain layer does."""
        def conv_transpose(x, weight, bias):
            return type(self)._functional(x, weight, bias, self.stride, self.padding, output_padding,
                                          self.groups, self.dilation)
        return conv_transpose

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        output_padding = tuple(self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, len(self.kernel_size),
            self.dilation))
        output_fn = self.output_function(output_padding)
        if not self.uses_estimator():
            return output_fn(input, self.weight, self.bias)
        return self.estimate(input, output_fn, self.geometry(output_padding))


def _layer(name: str, base: type, kind: type, doc: str, functional=None) -> type:
    def __init__(self, *args, probes: int = DEFAULT_PROBES, probe: str = DEFAULT_PROBE, **kwargs):
        base.__init__(self, *args, **kwargs)
        self.set_xconv(probes=probes, probe=probe)

    namespace = {"__init__": __init__, "__doc__": doc, "__module__": __name__}
    if functional is not None:
        namespace["_functional"] = staticmethod(functional)
    return type(name, (kind, base), namespace)


_DOC = """Drop-in ``nn.{base}`` whose weight gradient is estimated from ``probes`` random probes.

Takes every argument of ``nn.{base}`` plus keyword-only ``probes`` (int >= 0,
0 = exact backprop, default {probes}) and ``probe`` (a probe kind: "channel",
"gaussian", "rademacher", "orthogonal" or any other name in ``xconv.PROBE_KINDS``;
default "{probe}").
"""


def _doc(base: str) -> str:
    return _DOC.format(base=base, probes=DEFAULT_PROBES, probe=DEFAULT_PROBE)


XConv1d = _layer("XConv1d", nn.Conv1d, _XConvNd, _doc("Conv1d"))
XConv2d = _layer("XConv2d", nn.Conv2d, _XConvNd, _doc("Conv2d"))
XConv3d = _layer("XConv3d", nn.Conv3d, _XConvNd, _doc("Conv3d"))
XConvTranspose1d = _layer("XConvTranspose1d", nn.ConvTranspose1d, _XConvTransposeNd,
                          _doc("ConvTranspose1d"), F.conv_transpose1d)
XConvTranspose2d = _layer("XConvTranspose2d", nn.ConvTranspose2d, _XConvTransposeNd,
                          _doc("ConvTranspose2d"), F.conv_transpose2d)
XConvTranspose3d = _layer("XConvTranspose3d", nn.ConvTranspose3d, _XConvTransposeNd,
                          _doc("ConvTranspose3d"), F.conv_transpose3d)

#: The plain torch layer each XConv layer replaces.
XCONV_FOR = {
    nn.Conv1d: XConv1d, nn.Conv2d: XConv2d, nn.Conv3d: XConv3d,
    nn.ConvTranspose1d: XConvTranspose1d, nn.ConvTranspose2d: XConvTranspose2d,
    nn.ConvTranspose3d: XConvTranspose3d,
}
