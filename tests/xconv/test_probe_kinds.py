"""The probe-kind registry (xconv.probes): the built-in kinds, and a new kind added from outside.

A new kind is one ProbeKind subclass and its registration; the fixture
``toy_kind`` (``coordinate_probes.py``) adds a toy kind that way, the tests use
it through ``xconv.XConv2d(..., probe=name)``, and the fixture removes it again.
"""
import math

import pytest
import torch
import torch.nn as nn

import xconv
from xconv.convert import sketch_numbers_per_sample
from xconv.layouts import CHANNEL, FULL
from xconv.probes import (PROBE_REGISTRY, ProbeKind, draw_probes, probe_kind, register_probe_kind,
                          unregister_probe_kind)

from coordinate_probes import toy_kind  # noqa: F401  (fixture: a coordinate kind registered from outside)
from stats import assert_unbiased


def second_moment(name: str, shape: tuple[int, ...], count: int) -> torch.Tensor:
    """``(1/count) sum_p e_p e_p^T`` over ``count`` probes of kind ``name``, each of ``shape``."""
    e = draw_probes(name, count, shape, seed=3, dtype=torch.float64, device=torch.device("cpu")).flatten(1)
    return e.T @ e / count


# The built-in kinds ----------------------------------------------------------------------------------

def test_built_in_kinds_in_order_with_their_layouts():
    assert xconv.PROBE_KINDS == ("channel", "gaussian", "rademacher", "orthogonal") == tuple(PROBE_REGISTRY)
    assert [probe_kind(name).layout for name in xconv.PROBE_KINDS] == [CHANNEL, FULL, FULL, FULL]
    assert probe_kind("channel").probe_shape(3, (4, 5)) == (4, 5)
    assert probe_kind("gaussian").probe_shape(3, (4, 5)) == (3, 4, 5)
    assert [sketch_numbers_per_sample(name, 8, 3) for name in xconv.PROBE_KINDS] == [24, 8, 8, 8]


@pytest.mark.parametrize("name", xconv.PROBE_KINDS)
def test_second_moment_is_the_identity_and_a_seed_gives_the_same_probes(name):
    moment = second_moment(name, probe_kind(name).probe_shape(2, (3,)), 6000)  # entries' std <= sqrt(2/6000)
    torch.testing.assert_close(moment, torch.eye(len(moment), dtype=torch.float64), rtol=0, atol=0.1)
    shape, cpu = (2, 3), torch.device("cpu")
    first, again, other = (draw_probes(name, 5, shape, seed=seed, dtype=torch.float32, device=cpu)
                           for seed in (7, 7, 8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_registration_errors_are_clear():
    with pytest.raises(ValueError, match="probe kind 'gaussian' is already registered"):
        register_probe_kind(type("Again", (ProbeKind,), {"name": "gaussian", "layout": FULL}))
    with pytest.raises(TypeError, match="needs a name .* and a layout"):
        register_probe_kind(type("NoLayout", (ProbeKind,), {"name": "no-layout"}))
    with pytest.raises(TypeError, match="expects a ProbeKind subclass"):
        register_probe_kind(object)
    with pytest.raises(ValueError, match="probe must be one of 'channel', .* got 'nothing'"):
        unregister_probe_kind("nothing")
    assert xconv.PROBE_KINDS == ("channel", "gaussian", "rademacher", "orthogonal")


# A kind added from outside -------------------------------------------------------------------------

def layer_and_exact_gradient(probes, probe):
    """An XConv layer (always sketching: with one probe per coordinate the sketch is no smaller than
    the input), its input, output gradient and the exact weight gradient of the plain layer."""
    plain = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect").double()
    layer = xconv.XConv2d(3, 4, 3, padding=1, padding_mode="reflect", probes=probes, probe=probe,
                          fallback=False).double()
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    grad_out = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    plain(x).backward(grad_out)
    return layer, x, grad_out, plain.weight.grad


def test_a_registered_kind_is_listed_and_accepted_everywhere(toy_kind):
    assert xconv.PROBE_KINDS[-1] == toy_kind and xconv.PROBE_KINDS[:4] == ("channel", "gaussian", "rademacher",
                                                                           "orthogonal")
    layout = probe_kind(toy_kind).layout
    assert sketch_numbers_per_sample(toy_kind, 8, 3) == (24 if layout is CHANNEL else 8)
    model = xconv.convert(nn.Sequential(nn.Conv2d(3, 4, 3)), probes=4, probe=toy_kind)
    assert model[0].probe == toy_kind
    shape = probe_kind(toy_kind).probe_shape(2, (3,))
    numel = math.prod(shape)  # r = D probes: the second moment is I exactly
    torch.testing.assert_close(second_moment(toy_kind, shape, numel), torch.eye(numel, dtype=torch.float64))


def test_a_registered_kind_is_exact_with_one_probe_per_coordinate(toy_kind):
    numel = math.prod(probe_kind(toy_kind).probe_shape(3, (5, 6)))  # 90 (full) or 30 (channel)
    layer, x, grad_out, exact = layer_and_exact_gradient(numel, toy_kind)
    layer(x).backward(grad_out)
    torch.testing.assert_close(layer.weight.grad, exact, rtol=1e-10, atol=1e-10)


def test_a_registered_kind_gives_an_unbiased_weight_gradient(toy_kind):
    numel = math.prod(probe_kind(toy_kind).probe_shape(3, (5, 6)))
    layer, x, grad_out, exact = layer_and_exact_gradient(numel // 2, toy_kind)  # half the coordinates
    estimates = []
    for _ in range(200):
        layer.zero_grad()
        layer(x).backward(grad_out)
        estimates.append(layer.weight.grad.clone())
    assert_unbiased(torch.stack(estimates), exact)


def test_an_unregistered_kind_is_refused(toy_kind):
    unregister_probe_kind(toy_kind)
    assert xconv.PROBE_KINDS == ("channel", "gaussian", "rademacher", "orthogonal")
    with pytest.raises(ValueError, match=f"probe must be one of 'channel', .*'orthogonal', got '{toy_kind}'"):
        xconv.XConv2d(3, 4, 3, probe=toy_kind)
