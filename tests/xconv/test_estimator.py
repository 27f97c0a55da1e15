"""Statistical and exactness tests of the XConv weight-gradient estimator.

The geometries are the one shared list (``geometries.py``); the estimates and the
data behind them come from ``estimates.py``; the statistic (``stats.py``) is shown
to reject 10% biases in every geometry by ``test_power.py``, and the exact limit
of the estimator (a second moment of exactly I) is tested in ``test_exact_limit.py``.
"""
import copy
import math

import pytest
import torch
import torch.nn as nn

import xconv
from xconv import estimator
from xconv.estimator import XConvFunction

from estimates import ESTIMATES, draw_estimates, exact_gradients, problem, weight_gradient_estimates
from geometries import GEOMETRIES
from single_thread import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)
from stats import assert_unbiased, fitted_slope


@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
@pytest.mark.parametrize("name", GEOMETRIES)
def test_weight_gradient_is_unbiased_and_the_rest_exact(name, probe):
    """ESTIMATES estimates of r = GEOMETRIES[name].probes probes: their mean is the exact weight
    gradient (every forward bit-identical, every input and bias gradient exact)."""
    exact, estimates = weight_gradient_estimates(name, probe)
    assert estimates.shape == (ESTIMATES, *exact["weight"].shape)
    assert_unbiased(estimates, exact["weight"])


@pytest.mark.parametrize("budget", ["default", "one probe and one sample at a time"])
@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
@pytest.mark.parametrize("name", GEOMETRIES)
def test_both_summation_orders_give_the_same_estimate(name, probe, budget, monkeypatch):
    """The batched-probe terms and the rebuilt input are one sum in two orders (``xconv.layouts``):
    the same probes give the same estimate to float64 rounding, in chunks of probes and slabs of
    samples too, so the statistical tests above hold for both orders (each geometry takes one)."""
    if budget != "default":
        monkeypatch.setattr(estimator, "_CHUNK_FLOOR_ELEMENTS", 1)
        monkeypatch.setattr(estimator, "_CHUNK_FRACTION_OF_INPUT", 10 ** 9)
    layers = problem(name, probe, probes=6)
    orders = {}
    for rebuild in (False, True):
        monkeypatch.setattr(estimator, "_by_reconstruction", lambda *args, rebuild=rebuild: rebuild)
        orders[rebuild] = draw_estimates(layers.converted, layers.x, layers.grad_out, count=2)
    torch.testing.assert_close(orders[True], orders[False], rtol=1e-11, atol=1e-11)


def test_the_cheaper_order_is_taken():
    """A first layer on RGB images rebuilds its input (r = 16 probes against 3 channels); a
    64-channel layer keeps the batched-probe terms, as does the FULL layout at batch 32 > r."""
    rgb, inner = nn.Conv2d(3, 64, 7, 2, 3), nn.Conv2d(64, 64, 3, 1, 1)
    layer_inputs = [(rgb, (8, 3, 224, 224)), (inner, (8, 64, 56, 56)), (inner, (32, 64, 56, 56))]
    chosen = []
    for (layer, shape), kind in zip(layer_inputs, ("channel", "channel", "gaussian")):
        out_shape = layer(torch.empty(shape, device="meta")).shape
        converted = xconv.convert(copy.deepcopy(layer), probes=16, probe=kind)
        chosen.append(estimator._by_reconstruction(xconv.probes.probe_kind(kind).layout, converted.geometry(),
                                                   shape, out_shape, layer.weight.shape, 16))
    assert chosen == [True, False, False]


@pytest.mark.parametrize("name", ["2d-same-even-circular", "transpose2d-stride-groups", "1d-dilation-stride"])
def test_gradcheck_passes_with_orthogonal_probes_spanning_the_input(name):
    full_rank = math.prod(GEOMETRIES[name].input_shape[1:])  # C_in * prod(spatial): r = D orthonormal probes
    converted = problem(name, "orthogonal", probes=full_rank).converted
    x = torch.randn(GEOMETRIES[name].input_shape, dtype=torch.float64, requires_grad=True)
    weight = converted.weight.detach().clone().requires_grad_()
    bias = None if converted.bias is None else converted.bias.detach().clone().requires_grad_()

    inputs = (x, weight) if bias is None else (x, weight, bias)
    # fast mode: random projections of the Jacobians (seconds, not minutes)
    assert torch.autograd.gradcheck(lambda *a: _apply(converted, *a), inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def _apply(layer, x, weight, bias=None):
    """Call the XConv autograd function of ``layer`` on explicit tensors."""
    if isinstance(layer, xconv.layers._XConvTransposeNd):
        padding = tuple(layer.output_padding)
        return XConvFunction.apply(x, weight, bias, layer.output_function(padding), layer.geometry(padding),
                                   layer.probes, layer.probe)
    return XConvFunction.apply(x, weight, bias, layer._conv_forward, layer.geometry(), layer.probes, layer.probe)


@pytest.mark.parametrize("probe", ["channel", "gaussian", "rademacher"])
def test_error_variance_falls_like_one_over_r(probe):
    """E||estimate - exact||^2 = C / r for i.i.d. probes: the log-log slope is -1."""
    probe_counts = [2, 4, 8, 16, 32, 64]
    log_r, log_mse, log_mse_std = [], [], []
    for probes in probe_counts:
        layers = problem("2d-stride-dilation-groups-reflect", probe, probes=probes)
        exact = exact_gradients(layers)["weight"]
        estimates = draw_estimates(layers.converted, layers.x, layers.grad_out, count=150, seed=probes)
        squared_errors = (estimates - exact).flatten(1).pow(2).sum(1)  # (M,), independent across probe counts
        mse = squared_errors.mean()
        log_r.append(math.log(probes))
        log_mse.append(math.log(mse))
        log_mse_std.append((squared_errors.std() / mse / math.sqrt(len(squared_errors))).item())  # delta method
    slope, slope_std = fitted_slope(log_r, log_mse, log_mse_std)
    assert abs(slope + 1) <= 4 * slope_std, f"slope {slope:.3f} +- {slope_std:.3f}, expected -1"
    assert slope_std < 0.1  # the fit is tight enough to tell -1 from -0.5 or -2
