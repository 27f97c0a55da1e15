"""Statistical and exactness tests of the XConv weight-gradient estimator.

The geometries are the one shared list (``geometries.py``); the estimates and the
data behind them come from ``estimates.py``; the statistic (``stats.py``) is shown
to reject 10% biases in every geometry by ``test_power.py``, and the exact limit
of the estimator (a second moment of exactly I) is tested in ``test_exact_limit.py``.
"""
import math

import pytest
import torch

import xconv
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
