"""XLinear (``xconv.linear``): torch's output and input/bias gradients bit for bit, an unbiased
weight-gradient estimate (with shown power against a 10% bias), ``r`` numbers kept per row, never
more than exact, and conversion by ``xconv.convert(linear=...)``."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import xconv
from xconv.fake_peak import fake_peak
from xconv.memory import SavedTensorMeter

from single_thread import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)
from stats import assert_unbiased, bias_statistic

FEATURES, OUT = 24, 5
FULL_KINDS = ["gaussian", "rademacher", "orthogonal"]


def twins(bias: bool = True, dtype=torch.float32, probes: int = 4, probe: str = "gaussian"):
    plain = nn.Linear(FEATURES, OUT, bias=bias, dtype=dtype)
    converted = xconv.XLinear(FEATURES, OUT, bias=bias, dtype=dtype, probes=probes, probe=probe)
    converted.load_state_dict(plain.state_dict())
    return plain, converted


def run(layer: nn.Module, x: torch.Tensor, grad_offset: float = 0.0):
    """The output, the input gradient and the parameters' gradients of one step at ``x``, with output
    gradient ``grad_offset + N(0, 1)`` (the same for every call)."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    out = layer(x)
    grad = grad_offset + torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(grad.to(out.dtype))
    return out.detach(), x.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad


def noncontiguous_rows() -> torch.Tensor:
    return torch.randn(FEATURES, 3, 4).transpose(0, 2)  # (4, 3, FEATURES), features not the fastest axis


SHAPES = {"one row": (FEATURES,), "rows": (9, FEATURES), "3d": (2, 5, FEATURES), "4d": (2, 3, 2, FEATURES)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [*SHAPES, "non-contiguous"])
def test_output_and_input_and_bias_gradients_are_torchs(shape, bias, dtype):
    torch.manual_seed(0)
    plain, converted = twins(bias, dtype)
    x = (noncontiguous_rows() if shape == "non-contiguous" else torch.randn(SHAPES[shape])).to(dtype)
    ours, theirs = run(converted, x), run(plain, x)
    assert converted.calls.sketched == 1 and converted.calls.exact == 0
    for name, a, b in zip(["output", "input gradient", "weight gradient", "bias gradient"], ours, theirs):
        if name == "weight gradient":
            assert a.shape == b.shape and a.dtype == b.dtype and torch.isfinite(a).all()
        elif b is not None:
            assert torch.equal(a, b), name


OFFSET = 2.0
# The estimate's relative spread is about sqrt(2 / r) (whole-gradient direction, rank-one gradient):
# ESTIMATES estimates of r = 32 probes put a 10% bias at about 0.1 sqrt(600) / 0.25 = 9.8 standard
# errors, above the statistic's threshold (about 6.5); a larger layer than FEATURES allows r = 32.
ESTIMATES, WIDE, PROBES = 600, 128, 32


def weight_gradient_estimates(probe: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ESTIMATES float64 estimates of one layer's weight gradient at a fixed input, and the exact one.
    Input and output gradient are ``OFFSET + N(0, 1)``, so the gradient is large next to one
    estimate's spread in every weight (as in ``estimates.py``)."""
    torch.manual_seed(0)
    plain = nn.Linear(WIDE, 3, dtype=torch.float64)
    converted = xconv.convert(copy.deepcopy(plain), probes=PROBES, linear=probe)
    x = OFFSET + torch.randn(16, WIDE, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    exact = run(plain, x, OFFSET)[2]
    state = xconv.get_rng_state()
    xconv.manual_seed(5678)
    try:
        estimates = torch.stack([run(converted, x, OFFSET)[2] for _ in range(ESTIMATES)])
    finally:
        xconv.set_rng_state(state)
    return estimates, exact


@pytest.mark.parametrize("probe", FULL_KINDS)
def test_weight_gradient_is_unbiased(probe):
    estimates, exact = weight_gradient_estimates(probe)
    assert_unbiased(estimates, exact)


@pytest.mark.parametrize("factor", [0.9, 1.1])
@pytest.mark.parametrize("probe", FULL_KINDS)
def test_the_unbiasedness_test_rejects_a_ten_percent_bias(probe, factor):
    """Power: the same estimates scaled by 0.9 or 1.1, or with one output row's estimate scaled by
    1.1, are rejected by the statistic the test above passes."""
    estimates, exact = weight_gradient_estimates(probe)
    one_row = estimates.clone()
    one_row[:, 0] *= factor
    for biased in (factor * estimates, one_row):
        assert bias_statistic(biased, exact).rejected


def test_orthogonal_probes_as_many_as_features_are_exact():
    """``r = in`` orthogonal probes: ``E^T E = in I``, so the estimate is the exact gradient (forced:
    such a sketch saves nothing and would otherwise fall back)."""
    torch.manual_seed(0)
    plain, converted = twins(dtype=torch.float64, probes=FEATURES, probe="orthogonal")
    x = torch.randn(7, FEATURES, dtype=torch.float64)
    with xconv.force_sketch():
        estimate = run(converted, x)[2]
    assert converted.calls.forced == 1
    torch.testing.assert_close(estimate, run(plain, x)[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("probe", FULL_KINDS)
def test_the_sketch_keeps_r_numbers_per_row(probe):
    """Kept for backward: the ``(N, r)`` sketch (the weight is a parameter, not counted)."""
    _, converted = twins(probes=5, probe=probe)
    x = torch.randn(3, 4, FEATURES, requires_grad=True)
    with SavedTensorMeter(converted) as meter:
        converted(x).sum().backward()
    assert meter.total_bytes == 3 * 4 * 5 * 4


def test_no_more_than_exact_falls_back_to_torch():
    """``r >= in``: the call keeps its input and every gradient is torch's, weight too, bit for bit."""
    torch.manual_seed(0)
    plain, converted = twins(probes=FEATURES)
    x = torch.randn(6, FEATURES)
    ours, theirs = run(converted, x), run(plain, x)
    assert converted.calls.exact == 1 and converted.calls.sketched == 0
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_channel_probes_are_refused_with_the_allowed_kinds():
    with pytest.raises(ValueError, match="'gaussian', 'rademacher', 'orthogonal'.*got 'channel'"):
        xconv.XLinear(4, 2, probe="channel")
    with pytest.raises(ValueError, match="got 'channel'"):
        xconv.convert(nn.Sequential(nn.Linear(4, 2)), linear="channel")


def small_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10), nn.ReLU(),
                         nn.Linear(10, 4))


def test_convert_swaps_linear_layers_only_when_asked_and_unconvert_restores_them():
    net = small_net()
    parameters = list(net.parameters())
    assert not any(isinstance(m, xconv.XLinear) for m in xconv.convert(copy.deepcopy(net), probes=4).modules())
    converted = xconv.convert(net, probes=4, linear="rademacher")
    assert [type(m).__name__ for m in converted] == ["XConv2d", "ReLU", "Flatten", "XLinear", "ReLU", "XLinear"]
    assert converted[3].probe == "rademacher" and converted[3].probes == 4
    assert list(converted.parameters()) == parameters
    xconv.set_probes(converted, 2, probe="gaussian")  # the convolutions' kind; linear layers keep theirs
    assert (converted[0].probe, converted[3].probe, converted[3].probes) == ("gaussian", "rademacher", 2)
    assert [type(m) for m in xconv.unconvert(converted)] == [type(m) for m in small_net()]


def test_convert_with_an_example_leaves_plain_the_linear_layers_whose_sketch_saves_nothing():
    """``r = 16``: the 288-feature layer sketches; the 10-feature one (16 >= 10) stays torch's."""
    net = xconv.convert(small_net(), probes=16, linear="gaussian", keep_once=False,
                        example_input=torch.randn(2, 3, 8, 8))
    assert isinstance(net[3], xconv.XLinear) and type(net[5]) is nn.Linear
    assert "net" not in xconv.left_plain(net) and "5" in xconv.left_plain(net)


def test_a_fake_training_step_runs_and_keeps_less_than_exact():
    """Under fake tensors (``xconv.fake_peak``) the probes are drawn without data. With 1-bit ReLUs
    (``activations="lossless"``), what is alive when backward starts drops by exactly the two
    1024-feature inputs the hidden layers no longer keep, less the three layers' 16-number sketches
    (the first layer's input is the batch, alive anyway); the step's peak drops too."""
    def model(linear):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
        return xconv.convert(net, probes=16, activations="lossless", linear=linear)
    exact, sketched = (fake_peak(model(linear), (256, 64)) for linear in (None, "gaussian"))
    assert exact.after_forward_bytes - sketched.after_forward_bytes == 4 * (2 * 256 * 1024 - 3 * 256 * 16)
    assert sketched.total_bytes < exact.total_bytes


@pytest.mark.parametrize("probe", FULL_KINDS)
def test_backward_draws_the_forward_probes_again(probe):
    """Two layers with the same seed give the same estimate; another seed, another one."""
    x = torch.randn(5, FEATURES)
    estimates = []
    for seed in (7, 7, 8):
        torch.manual_seed(0)  # the same weights
        xconv.manual_seed(seed)
        estimates.append(run(twins(probe=probe)[1], x)[2])
    assert torch.equal(estimates[0], estimates[1]) and not torch.equal(estimates[0], estimates[2])



class _OwnLinear(nn.Linear):
    def forward(self, input):
        return super().forward(input) * 2


def test_linear_subclasses_are_left_alone_and_named_only_when_linear_layers_are_converted():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xconv.convert(nn.Sequential(_OwnLinear(4, 2)), probes=1)  # no warning: linear layers not asked for
    with pytest.warns(UserWarning, match=r"0 \(_OwnLinear\)"):
        net = xconv.convert(nn.Sequential(_OwnLinear(4, 2)), probes=1, linear="gaussian")
    assert type(net[0]) is _OwnLinear
