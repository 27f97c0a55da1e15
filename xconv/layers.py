"""Drop-in XConv layers: subclasses of torch's convolutions.

Each takes every argument of its parent plus keyword-only ``probes`` (0 =
exact backprop), ``probe`` (the probe kind) and ``fallback``. The forward output
is computed by the parent's own code, so it is bit-identical; only the weight
gradient is estimated. The estimator is used when ``probes > 0``, autograd is
recording and the weight requires a gradient; otherwise the layer is the plain
layer.

Never more than exact
---------------------
A sketch keeps ``probe_kind.numbers_per_sample(probes, C_in)`` numbers per sample
(``r * C_in`` for channel probes, ``r`` for the others; :mod:`xconv.probes`), the
input ``C_in * prod(spatial)``. Each call that would use the estimator compares
the two (:func:`sketch_saves_memory`). Where the sketch would not be smaller, the
call *falls back*: it runs the plain layer's own forward under autograd, so it
keeps exactly what plain PyTorch keeps (its input, and for padding modes other
than zeros the padded input too) and every gradient (input, weight, bias) is
plain PyTorch's, bit for bit. So an XConv layer never keeps more
for backward than the plain layer would, and never pays for noise that saves
nothing.

Every such decision is counted in ``layer.calls`` (an :class:`XConvCalls`:
``sketched``, ``exact`` = fell back, ``forced``, and by :class:`NoSaving` reason
the input shapes and numbers per sample of the calls whose sketch saved nothing);
``xconv.memory.fallback_report(model)`` collects them by layer name and
``xconv.memory.SavedTensorMeter(model)`` shows them for the forward passes it
metered (``meter.exact_fallbacks``, ``meter.xconv_calls``). Calls that cannot use
the estimator at all (``probes == 0``, no autograd, frozen weight) are plain and
not counted.

Opting out (to measure the estimator itself where it saves no memory, as the
gradient-error study does): ``fallback=False`` per layer (constructor or
:meth:`XConvMixin.set_xconv`), or ``with xconv.layers.force_sketch():`` for every
layer called inside the block. Forced calls sketch and are counted as
``sketched`` and ``forced``.

The same rule, decided ahead of time: ``xconv.convert(..., example_input=x)``
leaves plain the convolutions none of whose calls at ``x`` would sketch (they are
exact for every input); the harness's probe cap (``tasks/probe_cap.py``) sets a
layer to ``probes=0`` at the first training call that would fall back. A layer
kept XConv decides call by call.

Like torch's convolutions, every layer takes batched ``(B, C, *spatial)`` and
unbatched ``(C, *spatial)`` input; the estimator treats an unbatched input as a
batch of one and returns the unbatched shape, as torch does.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_probe_kind, check_probes
from .estimator import ConvGeometry, XConvFunction
from .probes import probe_kind

__all__ = [
    "XConvMixin", "XConvCalls", "NoSaving", "sample_shape_of", "sketch_saves_memory", "force_sketch", "sketching_forced",
    "XConv1d", "XConv2d", "XConv3d",
    "XConvTranspose1d", "XConvTranspose2d", "XConvTranspose3d",
]

DEFAULT_PROBES = 16
DEFAULT_PROBE = "channel"


def sample_shape_of(layer: nn.Module, input: torch.Tensor) -> tuple[int, ...] | None:
    """One sample's shape as the never-more-than-exact rule counts it, or None for an input of a
    dimension the layer does not take.

    Convolutions: ``(C_in, *spatial)`` of a batched ``(B, C_in, *spatial)`` or unbatched input.
    Linear layers: ``(in_features,)``: a sample is one row, every leading axis counts as batch.
    """
    if isinstance(layer, nn.Linear):
        return tuple(input.shape[-1:]) if input.dim() >= 1 else None
    dims = len(layer.kernel_size)
    if input.dim() not in (dims + 1, dims + 2):
        return None
    return tuple(input.shape if input.dim() == dims + 1 else input.shape[1:])


def sketch_saves_memory(probe: str, probes: int, sample_shape) -> bool:
    """The rule of every XConv call: whether ``probes`` probes of kind ``probe`` keep fewer numbers
    per sample than one input sample of shape ``sample_shape`` = ``(C_in, *spatial)`` holds.

    ``numbers_per_sample(probes, C_in) < C_in * prod(spatial)``: ``probes < prod(spatial)`` for
    channel probes, ``probes < C_in * prod(spatial)`` for the others.
    """
    sample_shape = tuple(sample_shape)
    return probe_kind(probe).numbers_per_sample(probes, sample_shape[0]) < math.prod(sample_shape)


_forced_depth = 0  # how many force_sketch() blocks are open (process-wide)


@contextlib.contextmanager
def force_sketch():
    """Within the block every XConv call that can use the estimator does, even where its sketch is
    not smaller than its input (no fallback to exact; such calls count as ``forced``).

    For measuring the estimator itself (its error, its variance) on inputs too small for it to
    save memory. Process-wide (also covers autograd and data-parallel threads); blocks nest. The
    decision is taken where a layer's forward runs with autograd recording: under gradient
    checkpointing that is the recomputation during backward, so keep the block open around
    backward too, or set ``layer.fallback = False`` instead.
    """
    global _forced_depth
    _forced_depth += 1
    try:
        yield
    finally:
        _forced_depth -= 1


def sketching_forced() -> bool:
    """Whether a :func:`force_sketch` block is open."""
    return _forced_depth > 0


class NoSaving(NamedTuple):
    """Why a call's sketch would not save memory: the input's per-sample shape, the probes, and the
    numbers per sample each way (``sketch_numbers >= input_numbers``)."""

    input_shape: tuple[int, ...]  # (C_in, *spatial) of one sample
    probes: int
    probe: str
    sketch_numbers: int  # numbers per sample the sketch keeps
    input_numbers: int  # numbers per sample of the input


@dataclass
class XConvCalls:
    """What the calls of one XConv layer did, counting only calls that could use the estimator
    (``probes > 0``, autograd recording, weight requiring a gradient).

    ``sketched``: kept a sketch and estimated the weight gradient; ``forced`` of them although the
    sketch was not smaller than the input (``fallback=False`` or :func:`force_sketch`).
    ``exact``: fell back because the sketch would not have been smaller: kept the input, computed
    the plain layer's exact gradients. ``no_saving``: the calls whose sketch was or would have been
    no smaller (the ``exact`` and the ``forced`` ones), counted by :class:`NoSaving` reason.
    """

    sketched: int = 0
    exact: int = 0
    forced: int = 0
    no_saving: dict[NoSaving, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Calls that could use the estimator: ``sketched + exact``."""
        return self.sketched + self.exact

    def reset(self) -> None:
        self.sketched = self.exact = self.forced = 0
        self.no_saving = {}


class XConvMixin:
    """XConv settings shared by every layer; also set by :func:`xconv.convert`.

    ``probes``, ``probe``; ``fallback`` (default True: a call whose sketch would not be smaller
    than its input keeps the input and computes the exact gradients instead); ``calls``, the
    layer's :class:`XConvCalls`.
    """

    probes: int
    probe: str
    fallback: bool = True  # a class default, so layers made by xconv.convert have it too

    def set_xconv(self, *, probes: int, probe: str, fallback: bool | None = None) -> None:
        """Set the probe count and kind, and ``fallback`` unless it is None (then it stays as it is)."""
        self.probes = check_probes(probes)
        self.probe = check_probe_kind(probe)
        if fallback is not None:
            if not isinstance(fallback, bool):
                raise TypeError(f"fallback must be True or False, got {fallback!r}")
            self.fallback = fallback

    @property
    def calls(self) -> XConvCalls:
        """This layer's :class:`XConvCalls` (made at first use, so converted layers have one too)."""
        calls = self.__dict__.get("_xconv_calls")
        if calls is None:
            calls = self.__dict__["_xconv_calls"] = XConvCalls()
        return calls

    def uses_estimator(self) -> bool:
        """Whether a call now could use the estimator (``probes > 0``, autograd on, weight trained)."""
        return self.probes > 0 and self.weight.requires_grad and torch.is_grad_enabled()

    def sample_shape(self, input: torch.Tensor) -> tuple[int, ...] | None:
        """One sample's shape (:func:`sample_shape_of`): ``(C_in, *spatial)``, ``(in_features,)``."""
        return sample_shape_of(self, input)

    def _decision(self, input: torch.Tensor) -> tuple[bool, NoSaving | None]:
        """``(sketch?, why the sketch saves nothing or None)`` for a call at ``input``; counts nothing."""
        shape = self.sample_shape(input)
        if not self.uses_estimator() or shape is None:
            return False, None  # (an input of the wrong dimension gets torch's own error from the plain path)
        if sketch_saves_memory(self.probe, self.probes, shape):
            return True, None
        why = NoSaving(shape, self.probes, self.probe,
                       probe_kind(self.probe).numbers_per_sample(self.probes, shape[0]), math.prod(shape))
        return not self.fallback or sketching_forced(), why

    def falls_back(self, input: torch.Tensor) -> bool:
        """Whether a call now at ``input`` would fall back to exact (counts nothing): it could use the
        estimator, but the sketch would not be smaller than the input, and fallback is not off."""
        sketch, why = self._decision(input)
        return why is not None and not sketch

    def sketches(self, input: torch.Tensor) -> bool:
        """Decide whether this call keeps a sketch of ``input``, and count it in :attr:`calls`.

        False for calls that cannot use the estimator (not counted) and for calls that fall back
        because the sketch would not be smaller than the input (``exact``), unless ``fallback`` is
        off or :func:`force_sketch` is open (then ``sketched`` and ``forced``).
        """
        sketch, why = self._decision(input)
        if not sketch and why is None:
            return False
        calls = self.calls
        if sketch:
            calls.sketched += 1
        else:
            calls.exact += 1
        if why is not None:
            calls.forced += int(sketch)
            calls.no_saving[why] = calls.no_saving.get(why, 0) + 1
        return sketch

    def extra_repr(self) -> str:
        fallback = "" if self.fallback else ", fallback=False"
        return f"{super().extra_repr()}, probes={self.probes}, probe={self.probe!r}{fallback}"

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
        if not self.sketches(input):  # the plain layer: exact backprop, torch's own saved tensors
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
        if not self.sketches(input):  # the plain layer: exact backprop, torch's own saved tensors
            return output_fn(input, self.weight, self.bias)
        return self.estimate(input, output_fn, self.geometry(output_padding))


def _layer(name: str, base: type, kind: type, doc: str, functional=None) -> type:
    def __init__(self, *args, probes: int = DEFAULT_PROBES, probe: str = DEFAULT_PROBE, fallback: bool = True,
                 **kwargs):
        base.__init__(self, *args, **kwargs)
        self.set_xconv(probes=probes, probe=probe, fallback=fallback)

    namespace = {"__init__": __init__, "__doc__": doc, "__module__": __name__}
    if functional is not None:
        namespace["_functional"] = staticmethod(functional)
    return type(name, (kind, base), namespace)


_DOC = """Drop-in ``nn.{base}`` whose weight gradient is estimated from ``probes`` random probes.

Takes every argument of ``nn.{base}`` plus keyword-only ``probes`` (int >= 0,
0 = exact backprop, default {probes}), ``probe`` (a probe kind: "channel",
"gaussian", "rademacher", "orthogonal" or any other name in ``xconv.PROBE_KINDS``;
default "{probe}") and ``fallback`` (default True: a call whose sketch would not be
smaller than its input keeps the input and computes torch's exact gradients, bit
for bit; False always sketches). ``layer.calls`` counts what the calls did
(:class:`xconv.layers.XConvCalls`).
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
