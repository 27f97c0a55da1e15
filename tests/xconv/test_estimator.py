"""Statistical and exactness tests of the XConv weight-gradient estimator."""
import math

import pytest
import torch
import torch.nn as nn

import xconv
from xconv.estimator import XConvFunction

from layer_pairs import layer_pair
from stats import assert_unbiased, bias_statistic, fitted_slope

# (plain layer, input shape, constructor arguments): stride, dilation, groups,
# every padding mode (and "same"), 1d/2d/3d, transposed, odd/even and non-square sizes.
CONFIGS = {
    "2d-pad1": (nn.Conv2d, (4, 3, 9, 8), dict(in_channels=3, out_channels=4, kernel_size=3, padding=1)),
    "2d-stride-dilation-groups-reflect": (nn.Conv2d, (4, 4, 9, 8), dict(
        in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, dilation=(2, 1), groups=2,
        padding=2, padding_mode="reflect")),
    "2d-same-even-circular": (nn.Conv2d, (3, 3, 7, 10), dict(
        in_channels=3, out_channels=4, kernel_size=4, padding="same", padding_mode="circular")),
    "2d-same-even-zeros": (nn.Conv2d, (3, 2, 8, 7), dict(
        in_channels=2, out_channels=3, kernel_size=(2, 4), padding="same", bias=False)),
    "2d-replicate-stride": (nn.Conv2d, (3, 2, 10, 9), dict(
        in_channels=2, out_channels=3, kernel_size=3, stride=(2, 3), padding=(1, 2),
        padding_mode="replicate")),
    "2d-depthwise": (nn.Conv2d, (4, 4, 6, 6), dict(in_channels=4, out_channels=4, kernel_size=3, groups=4)),
    "1d-replicate": (nn.Conv1d, (4, 3, 11), dict(
        in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="replicate")),
    "1d-dilation-stride": (nn.Conv1d, (4, 2, 16), dict(
        in_channels=2, out_channels=3, kernel_size=4, stride=3, dilation=2)),
    "3d-pad1": (nn.Conv3d, (2, 2, 5, 4, 6), dict(in_channels=2, out_channels=3, kernel_size=3, padding=1)),
    "3d-stride-groups": (nn.Conv3d, (2, 4, 5, 5, 4), dict(
        in_channels=4, out_channels=2, kernel_size=(3, 2, 1), stride=2, groups=2)),
    "transpose2d-stride-groups": (nn.ConvTranspose2d, (4, 4, 5, 6), dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=2, groups=2, padding=1, output_padding=1)),
    "transpose2d-dilation": (nn.ConvTranspose2d, (3, 2, 4, 5), dict(
        in_channels=2, out_channels=3, kernel_size=(2, 3), dilation=2, bias=False)),
    "transpose1d": (nn.ConvTranspose1d, (4, 3, 7), dict(in_channels=3, out_channels=2, kernel_size=4, stride=2)),
    "transpose3d": (nn.ConvTranspose3d, (2, 2, 3, 4, 3), dict(
        in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1)),
}
ESTIMATES = 300


def weight_gradient_estimates(plain_cls, input_shape, kwargs, probe, probes=6, count=ESTIMATES):
    """Exact gradients of the plain layer and ``count`` XConv estimates of dW.

    Weights, input and output gradient depend only on the configuration (not on
    earlier draws); the probes continue XConv's own random stream.
    """
    with torch.random.fork_rng():
        torch.default_generator.manual_seed(1234)  # torch's generator alone, not XConv's
        plain, converted = layer_pair(plain_cls, probes=probes, probe=probe, **kwargs)
        x = torch.randn(input_shape, dtype=torch.float64, requires_grad=True)
        out = plain(x)
        grad_out = torch.randn_like(out)
    out.backward(grad_out)
    exact = {"x": x.grad.clone(), "weight": plain.weight.grad.clone(),
             "bias": None if plain.bias is None else plain.bias.grad.clone()}
    estimates = []
    for _ in range(count):
        converted.zero_grad()
        x.grad = None
        out_x = converted(x)
        assert torch.equal(out_x, out), "forward must be bit-identical to the plain layer"
        out_x.backward(grad_out)
        torch.testing.assert_close(x.grad, exact["x"], rtol=1e-12, atol=1e-12)
        if plain.bias is not None:
            torch.testing.assert_close(converted.bias.grad, exact["bias"], rtol=1e-12, atol=1e-12)
        estimates.append(converted.weight.grad.clone())
    return exact, torch.stack(estimates)


@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_weight_gradient_is_unbiased_and_the_rest_exact(config, probe):
    plain_cls, input_shape, kwargs = CONFIGS[config]
    exact, estimates = weight_gradient_estimates(plain_cls, input_shape, kwargs, probe)
    assert estimates.shape[1:] == exact["weight"].shape
    assert_unbiased(estimates, exact["weight"])


@pytest.mark.parametrize("config", ["2d-pad1", "2d-same-even-circular", "transpose2d-stride-groups"])
def test_bias_statistic_rejects_a_biased_estimator(config):
    """The unbiasedness check has power: a 10% scale error or a circular-padding
    stand-in for zero padding (the 2021 code's boundary bug) is rejected."""
    plain_cls, input_shape, kwargs = CONFIGS[config]
    exact, estimates = weight_gradient_estimates(plain_cls, input_shape, kwargs, "channel", probes=64)
    statistic, mean, std = bias_statistic(1.1 * estimates, exact["weight"])
    assert statistic > mean + 6 * std
    if plain_cls is nn.Conv2d and kwargs.get("padding_mode", "zeros") == "zeros":
        wrong_padding = dict(kwargs, padding_mode="circular")
        _, circular = weight_gradient_estimates(plain_cls, input_shape, wrong_padding, "channel", probes=64)
        statistic, mean, std = bias_statistic(circular, exact["weight"])
        assert statistic > mean + 6 * std


@pytest.mark.parametrize("config", ["2d-pad1", "2d-stride-dilation-groups-reflect", "1d-replicate",
                                    "3d-stride-groups", "transpose2d-stride-groups"])
def test_orthogonal_probes_spanning_the_input_are_exact(config):
    plain_cls, input_shape, kwargs = CONFIGS[config]
    full_rank = math.prod(input_shape[1:])  # C_in * prod(spatial): r = D orthonormal probes
    plain, converted = layer_pair(plain_cls, probes=full_rank, probe="orthogonal", **kwargs)
    x = torch.randn(input_shape, dtype=torch.float64)
    grad_out = torch.randn_like(plain(x))
    plain(x).backward(grad_out)
    converted(x).backward(grad_out)
    torch.testing.assert_close(converted.weight.grad, plain.weight.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("config", ["2d-same-even-circular", "transpose2d-stride-groups", "1d-dilation-stride"])
def test_gradcheck_passes_with_orthogonal_probes_spanning_the_input(config):
    plain_cls, input_shape, kwargs = CONFIGS[config]
    full_rank = math.prod(input_shape[1:])
    _, converted = layer_pair(plain_cls, probes=full_rank, probe="orthogonal", **kwargs)
    x = torch.randn(input_shape, dtype=torch.float64, requires_grad=True)
    weight = converted.weight.detach().clone().requires_grad_()
    bias = None if converted.bias is None else converted.bias.detach().clone().requires_grad_()

    inputs = (x, weight) if bias is None else (x, weight, bias)
    assert torch.autograd.gradcheck(lambda *a: _apply(converted, *a), inputs, eps=1e-6, atol=1e-6)


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
    plain_cls, input_shape, kwargs = CONFIGS["2d-stride-dilation-groups-reflect"]
    probe_counts = [2, 4, 8, 16, 32, 64]
    log_r, log_mse, log_mse_std = [], [], []
    for probes in probe_counts:
        exact, estimates = weight_gradient_estimates(plain_cls, input_shape, kwargs, probe,
                                                     probes=probes, count=150)
        squared_errors = (estimates - exact["weight"]).flatten(1).pow(2).sum(1)  # (M,)
        mse = squared_errors.mean()
        log_r.append(math.log(probes))
        log_mse.append(math.log(mse))
        log_mse_std.append((squared_errors.std() / mse / math.sqrt(len(squared_errors))).item())  # delta method
    slope, slope_std = fitted_slope(log_r, log_mse, log_mse_std)
    assert abs(slope + 1) <= 4 * slope_std, f"slope {slope:.3f} +- {slope_std:.3f}, expected -1"
    assert slope_std < 0.1  # the fit is tight enough to tell -1 from -0.5 or -2
