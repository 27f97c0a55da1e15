"""Exact gradients of the shared geometries (:mod:`geometries`) and XConv's estimates of them.

The input and the output gradient are ``OFFSET + N(0, 1)`` noise: with a
common offset the weight gradient is large next to the estimator's spread in
every weight (one probe's signal-to-noise ratio in the median weight of a
geometry: 0.5 for the median geometry and probe kind, 0.11 for the lowest;
0.07 and 0.03 with zero-mean noise), so ``ESTIMATES`` estimates of the
geometry's ``probes`` probes each tell a 10% bias from none
(``tests/xconv/test_power.py``). Weights, input and output gradient depend only
on the geometry; the probes only on ``PROBE_SEED`` (XConv's own generator is
seeded, then restored).

The geometries are small: most of them hold fewer numbers per sample than the
sketch of ``probes`` probes, where a layer would fall back to exact backprop
(``xconv.layers``, "Never more than exact"). :func:`draw_estimates` therefore
forces sketches (``xconv.layers.force_sketch``): these tests measure the estimator.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
import torch.nn as nn

import xconv

from geometries import GEOMETRIES
from layer_pairs import layer_pair

ESTIMATES = 128  # M estimates per test, of r = GEOMETRIES[name].probes probes each
OFFSET = 2.0
DATA_SEED, PROBE_SEED = 1234, 5678


class Problem(NamedTuple):
    """A plain layer, its XConv twin with the same weights, an input and an output gradient."""

    plain: nn.Module
    converted: nn.Module
    x: torch.Tensor
    grad_out: torch.Tensor


def problem(name: str, probe: str, probes: int | None = None, **overrides) -> Problem:
    """The layers of geometry ``name`` (constructor arguments updated by ``overrides``; ``probes``
    by default the geometry's) and their data."""
    geometry = GEOMETRIES[name]
    probes = geometry.probes if probes is None else probes
    with torch.random.fork_rng():
        torch.default_generator.manual_seed(DATA_SEED)  # torch's generator alone, not XConv's
        plain, converted = layer_pair(geometry.layer, probes=probes, probe=probe,
                                      **{**geometry.kwargs, **overrides})
        x = OFFSET + torch.randn(geometry.input_shape, dtype=torch.float64)
        with torch.no_grad():
            grad_out = OFFSET + torch.randn_like(plain(x))
    return Problem(plain, converted, x, grad_out)


def exact_gradients(layers: Problem) -> dict[str, torch.Tensor | None]:
    """Gradients of the plain layer at the problem's input and output gradient."""
    x = layers.x.clone().requires_grad_()
    layers.plain.zero_grad()
    layers.plain(x).backward(layers.grad_out)
    bias = layers.plain.bias
    return {"x": x.grad, "weight": layers.plain.weight.grad.clone(),
            "bias": None if bias is None else bias.grad.clone()}


def draw_estimates(layer: nn.Module, x: torch.Tensor, grad_out: torch.Tensor, count: int = ESTIMATES,
                   check: Callable | None = None, seed: int = PROBE_SEED) -> torch.Tensor:
    """``count`` weight-gradient estimates of ``layer``, with XConv's generator seeded by ``seed``;
    every call sketches, also where the sketch is not smaller than the input (no fallback to exact).

    ``check(output, input_gradient, layer)`` is called after every backward pass.
    """
    state = xconv.get_rng_state()
    xconv.manual_seed(seed)
    try:
        estimates = []
        for _ in range(count):
            layer.zero_grad()
            x_leaf = x.clone().requires_grad_()
            with xconv.layers.force_sketch():  # sketch even where the input is no larger
                out = layer(x_leaf)
            out.backward(grad_out)
            if check is not None:
                check(out, x_leaf.grad, layer)
            estimates.append(layer.weight.grad.clone())
        return torch.stack(estimates)
    finally:
        xconv.set_rng_state(state)


@functools.lru_cache(maxsize=None)
def weight_gradient_estimates(name: str, probe: str) -> tuple[dict, torch.Tensor]:
    """Exact gradients and ``ESTIMATES`` XConv estimates of the weight gradient of geometry ``name``.

    Every pass is checked: the forward bit-identical to the plain layer's, the
    input and bias gradients exact.
    """
    layers = problem(name, probe)
    exact = exact_gradients(layers)
    with torch.no_grad():
        plain_out = layers.plain(layers.x)

    def check(out, input_gradient, layer):
        assert torch.equal(out, plain_out), "forward must be bit-identical to the plain layer"
        torch.testing.assert_close(input_gradient, exact["x"], rtol=1e-12, atol=1e-12)
        if exact["bias"] is not None:
            torch.testing.assert_close(layer.bias.grad, exact["bias"], rtol=1e-12, atol=1e-12)

    return exact, draw_estimates(layers.converted, layers.x, layers.grad_out, check=check)


#: The padding mode a "wrong padding" estimator pads its probes with, for each right one.
WRONG_PADDING = {"zeros": "circular", "reflect": "zeros", "replicate": "zeros", "circular": "zeros"}


def wrong_padding_estimates(name: str, probe: str) -> torch.Tensor:
    """Estimates of a layer that pads its probes in the wrong mode (:data:`WRONG_PADDING`), at the
    weights, input and output gradient of geometry ``name``: their mean is the gradient of the
    wrongly padded convolution, a bias confined to the taps that reach the padding."""
    right = problem(name, probe)
    wrong = problem(name, probe, padding_mode=WRONG_PADDING[GEOMETRIES[name].padding_mode])
    wrong.converted.load_state_dict(right.plain.state_dict())
    return draw_estimates(wrong.converted, right.x, right.grad_out)
