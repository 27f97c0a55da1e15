"""Probe kinds: the random probe vectors of randomized trace estimation, and their registry.

A probe kind is one object in :data:`PROBE_REGISTRY`, found by its name
(``XConv2d(..., probe="gaussian")``, ``xconv.convert(model, probe=...)``). It has

* ``name``;
* ``layout``, a :class:`~xconv.layouts.SketchLayout`: ``CHANNEL`` (one probe over
  the positions, shared by every input channel: probe shape ``spatial``, ``r x
  C_in`` numbers kept per sample) or ``FULL`` (one probe over channels and
  positions: probe shape ``(C_in, *spatial)``, ``r`` numbers per sample). The
  layout also says how forward sketches the input and how backward turns the
  sketch into the weight gradient (see :mod:`xconv.layouts`);
* ``draw(count, shape, generator=, dtype=, device=)``: ``count`` probes of
  ``shape``, random only through ``generator``: backward draws them again from
  the seed forward used, and must get the very same probes. Under fake tensors
  (``FakeTensorMode``, :mod:`xconv.fake_peak`) ``generator`` is a CPU generator
  whatever ``device`` is, and ``draw`` must only make tensors (no reading of
  values, no ``.item()``): fake tensors have shapes but no data.

The weight-gradient estimate is unbiased when ``E[(1/r) sum_p e_p e_p^T] = I``;
every kind here satisfies it.

Adding a kind: write one :class:`ProbeKind` subclass with a ``name``, a
``layout`` and a ``draw`` satisfying that identity, decorate it with
``@register_probe_kind`` (its name is then appended to ``xconv.PROBE_KINDS``),
and add tests: the tests parametrized over ``xconv.PROBE_KINDS`` pick it up, and
``tests/xconv/test_probe_kinds.py`` shows an unbiasedness and an exactness check.
Nothing else changes: layers, :func:`xconv.convert` and the planner ask the
registry.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch._guards import active_fake_mode
from torch._subclasses.fake_tensor import is_fake, maybe_get_fake_mode

from . import rng
from .layouts import CHANNEL, FULL, SketchLayout

__all__ = ["PROBE_KINDS", "PROBE_REGISTRY", "ProbeKind", "register_probe_kind", "unregister_probe_kind",
           "probe_kind", "probe_shape", "draw_probes", "call_probes", "chunk_seed"]

#: Probe kinds by name, in registration order.
PROBE_REGISTRY: dict[str, ProbeKind] = {}


def __getattr__(name: str):
    if name == "PROBE_KINDS":  # computed, so kinds registered later are listed too
        return tuple(PROBE_REGISTRY)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ProbeKind:
    """One kind of probe: a ``name``, a sketch ``layout`` and a way to ``draw`` probes."""

    name: str
    layout: SketchLayout

    def draw(self, count: int, shape: tuple[int, ...], *, generator: torch.Generator,
             dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``count`` probes of ``shape`` as a tensor ``(count, *shape)``, random only through ``generator``."""
        raise NotImplementedError

    def probe_shape(self, channels: int, spatial) -> tuple[int, ...]:
        """Shape of one probe for an input with ``channels`` x ``spatial``."""
        return self.layout.probe_shape(channels, tuple(spatial))

    def numbers_per_sample(self, probes: int, channels: int) -> int:
        """Numbers a layer keeps per sample with ``probes`` probes and ``channels`` input channels."""
        return self.layout.numbers_per_sample(probes, channels)

    def __repr__(self) -> str:
        return f"<probe kind {self.name!r}, {self.layout.name} layout>"


def register_probe_kind(cls: type[ProbeKind]) -> type[ProbeKind]:
    """Class decorator: register an instance of ``cls`` under ``cls.name``, after the kinds already there."""
    if not (isinstance(cls, type) and issubclass(cls, ProbeKind)):
        raise TypeError(f"register_probe_kind expects a ProbeKind subclass, got {cls!r}")
    if not isinstance(getattr(cls, "name", None), str) or not isinstance(getattr(cls, "layout", None), SketchLayout):
        raise TypeError(f"{cls.__name__} needs a name (str) and a layout (xconv.layouts.CHANNEL or FULL)")
    if cls.name in PROBE_REGISTRY:
        raise ValueError(f"probe kind {cls.name!r} is already registered: {PROBE_REGISTRY[cls.name]!r}")
    PROBE_REGISTRY[cls.name] = cls()
    return cls


def unregister_probe_kind(name: str) -> ProbeKind:
    """Remove the kind called ``name`` and return it."""
    return PROBE_REGISTRY.pop(probe_kind(name).name)


def probe_kind(name) -> ProbeKind:
    """The registered kind called ``name``, else a ValueError naming the registered ones."""
    kind = PROBE_REGISTRY.get(name) if isinstance(name, str) else None
    if kind is None:
        allowed = ", ".join(repr(k) for k in PROBE_REGISTRY)
        raise ValueError(f"probe must be one of {allowed}, got {name!r}")
    return kind


def _as_kind(kind: ProbeKind | str) -> ProbeKind:
    return kind if isinstance(kind, ProbeKind) else probe_kind(kind)


def probe_shape(kind: ProbeKind | str, channels: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of one probe of ``kind`` for an input with ``channels`` x ``spatial``."""
    return _as_kind(kind).probe_shape(channels, spatial)


def chunk_seed(call_seed: int, chunk_index: int) -> int:
    """Seed of the ``chunk_index``-th probe chunk of one layer call."""
    return (call_seed + 0x9E3779B97F4A7C15 * chunk_index) % 2**63


def call_probes(kind: ProbeKind | str, count: int, shape: tuple[int, ...], call_seed: int, index: int,
                like: torch.Tensor) -> torch.Tensor:
    """The ``index``-th chunk of probes of one layer call (``count`` probes, dtype and device of ``like``):
    forward and backward get the same ones from the call's seed."""
    return draw_probes(kind, count, shape, seed=chunk_seed(call_seed, index), dtype=like.dtype, device=like.device,
                       like=like)


def draw_probes(kind: ProbeKind | str, count: int, shape: tuple[int, ...], *, seed: int,
                dtype: torch.dtype, device: torch.device, like: torch.Tensor | None = None) -> torch.Tensor:
    """Draw ``count`` probes of ``kind``, each of ``shape``; same seed, same probes.

    Returns a tensor of shape ``(count, *shape)``.

    Under fake tensors (a ``FakeTensorMode`` is active, or ``like``, the tensor the
    probes go with, is fake) the probes are fake too: only their shape, dtype and
    device exist, so they are drawn from a CPU generator whatever ``device`` says
    (a fake ``cuda`` device needs no GPU; values do not matter there).
    """
    fake_mode = _fake_mode(like)
    if fake_mode is None:
        generator = rng.probe_generator(device, seed)
        return _as_kind(kind).draw(count, tuple(shape), generator=generator, dtype=dtype, device=device)
    with fake_mode if active_fake_mode() is None else contextlib.nullcontext():
        return _as_kind(kind).draw(count, tuple(shape), generator=_fake_generator.manual_seed(seed),
                                   dtype=dtype, device=device)


# Probes of fake tensors: any generator works, a CUDA one may not exist (no GPU); never torch's global one.
_fake_generator = torch.Generator(device="cpu")


def _fake_mode(like: torch.Tensor | None):
    """The FakeTensorMode the probes must be drawn under, or None for real probes."""
    mode = active_fake_mode()
    if mode is None and like is not None and is_fake(like):
        mode = maybe_get_fake_mode(like)
    return mode


# The built-in kinds, in the order of xconv.PROBE_KINDS ------------------------------------------------

class _StandardNormal(ProbeKind):
    """Entries i.i.d. ``N(0, 1)``: ``E[e e^T] = I``."""

    def draw(self, count, shape, *, generator, dtype, device):
        return torch.randn((count, *shape), generator=generator, dtype=dtype, device=device)


@register_probe_kind
class ChannelProbes(_StandardNormal):
    """Gaussian probes over the positions, one shared by every input channel (``r x C_in`` numbers kept)."""

    name, layout = "channel", CHANNEL


@register_probe_kind
class GaussianProbes(_StandardNormal):
    """Gaussian probes over channels and positions together (``r`` numbers kept)."""

    name, layout = "gaussian", FULL


@register_probe_kind
class RademacherProbes(ProbeKind):
    """Entries i.i.d. ``+-1`` with probability 1/2: ``E[e e^T] = I`` (the smallest variance of i.i.d. entries)."""

    name, layout = "rademacher", FULL

    def draw(self, count, shape, *, generator, dtype, device):
        signs = torch.randint(0, 2, (count, *shape), generator=generator, device=device, dtype=torch.int8)
        return (signs * 2 - 1).to(dtype)


@register_probe_kind
class OrthogonalProbes(ProbeKind):
    """Orthonormal probes scaled by ``sqrt(D)`` (``D`` = numbers per probe), in blocks of at most ``D``.

    A block's columns are the first ``w`` columns of a Haar-distributed orthogonal
    matrix ``Q`` (QR of a Gaussian matrix, signs fixed by ``diag(R)``), so
    ``E[q q^T] = I / D`` for each column and ``e = sqrt(D) q`` has ``E[e e^T] = I``.
    With ``r = D`` probes in one block ``sum_p e_p e_p^T = D Q Q^T = D I``: the
    estimate is exact.
    """

    name, layout = "orthogonal", FULL

    def draw(self, count, shape, *, generator, dtype, device):
        numel = math.prod(shape)
        work_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        blocks = []
        for start in range(0, count, numel):
            width = min(numel, count - start)
            gaussian = torch.randn((numel, width), generator=generator, dtype=work_dtype, device=device)
            q, r = torch.linalg.qr(gaussian)  # q: (numel, width), orthonormal columns
            q = q * torch.sign(torch.diagonal(r)).masked_fill(torch.diagonal(r) == 0, 1)  # Haar-distributed
            blocks.append(q.T * math.sqrt(numel))  # (width, numel)
        return torch.cat(blocks).reshape(count, *shape).to(dtype)
