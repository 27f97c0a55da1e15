"""Random probe vectors for randomized trace estimation.

Two layouts:

* ``channel``: one probe over the spatial positions, shared by every input
  channel (the "independent" mode of the paper's code). A probe batch has shape
  ``(r, *spatial)``; the layer keeps ``r x B x C_in`` numbers.
* ``gaussian``, ``rademacher``, ``orthogonal``: one probe over channels and
  positions together. A probe batch has shape ``(r, C_in, *spatial)``; the layer
  keeps ``B x r`` numbers.

Every kind satisfies ``E[(1/r) sum_p e_p e_p^T] = I``, which makes the weight
gradient estimate unbiased. Orthogonal probes are orthonormal columns scaled by
``sqrt(D)`` (``D`` = numbers per probe), drawn in blocks of at most ``D``; with
``r = D`` in one block they are exact.
"""
from __future__ import annotations

import math

import torch

from . import rng
from ._checks import PROBE_KINDS

__all__ = ["PROBE_KINDS", "probe_shape", "draw_probes", "chunk_seed"]


def probe_shape(kind: str, channels: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of one probe of ``kind`` for an input with ``channels`` x ``spatial``."""
    return tuple(spatial) if kind == "channel" else (channels, *spatial)


def chunk_seed(call_seed: int, chunk_index: int) -> int:
    """Seed of the ``chunk_index``-th probe chunk of one layer call."""
    return (call_seed + 0x9E3779B97F4A7C15 * chunk_index) % 2**63


def draw_probes(kind: str, count: int, shape: tuple[int, ...], *, seed: int,
                dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Draw ``count`` probes of ``kind``, each of ``shape``; same seed, same probes.

    Returns a tensor of shape ``(count, *shape)``.
    """
    generator = rng.probe_generator(device, seed)
    size = (count, *shape)
    if kind in ("channel", "gaussian"):
        return torch.randn(size, generator=generator, dtype=dtype, device=device)
    if kind == "rademacher":
        signs = torch.randint(0, 2, size, generator=generator, device=device, dtype=torch.int8)
        return (signs * 2 - 1).to(dtype)
    if kind == "orthogonal":
        return _orthogonal(count, shape, generator, dtype, device)
    raise ValueError(f"probe must be one of {PROBE_KINDS}, got {kind!r}")


def _orthogonal(count, shape, generator, dtype, device) -> torch.Tensor:
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
