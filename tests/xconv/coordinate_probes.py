"""A toy probe kind added from outside the library, in both sketch layouts, and a fixture registering it.

``sqrt(D)`` times a standard basis vector (``D`` numbers per probe): with
``r = D`` probes, one per coordinate, ``(1/r) sum_p e_p e_p^T = I`` exactly, so
the weight-gradient estimate (linear in that second moment) is the exact
gradient up to rounding, for every layer geometry. Import the fixture with
``from coordinate_probes import toy_kind  # noqa: F401``.
"""
import math

import pytest
import torch

from xconv.layouts import CHANNEL, FULL
from xconv.probes import PROBE_REGISTRY, ProbeKind, register_probe_kind, unregister_probe_kind


class CoordinateProbes(ProbeKind):
    """``sqrt(D)`` times a standard basis vector (``D`` numbers per probe), coordinates drawn without
    repeats within blocks of ``D`` probes.

    Each probe is uniform over the ``D`` coordinates: ``E[e e^T] = D * I / D = I``.
    ``r = D`` probes in one block hit every coordinate once: ``(1/D) sum_p e_p e_p^T = I``
    exactly, so the weight gradient is exact.
    """

    name, layout = "toy-coordinate", FULL

    def draw(self, count, shape, *, generator, dtype, device):
        numel = math.prod(shape)
        picks = torch.cat([torch.randperm(numel, generator=generator, device=device)[:count - start]
                           for start in range(0, count, numel)])
        return math.sqrt(numel) * torch.eye(numel, dtype=dtype, device=device)[picks].reshape(count, *shape)


class SharedCoordinateProbes(CoordinateProbes):
    """The same over the positions only, one probe shared by every input channel."""

    name, layout = "toy-shared-coordinate", CHANNEL


@pytest.fixture(params=[CoordinateProbes, SharedCoordinateProbes], ids=["full", "channel"])
def toy_kind(request):
    """The name of a registered coordinate kind (each layout in turn); unregistered afterwards."""
    register_probe_kind(request.param)
    yield request.param.name
    if request.param.name in PROBE_REGISTRY:  # unless the test did
        unregister_probe_kind(request.param.name)
