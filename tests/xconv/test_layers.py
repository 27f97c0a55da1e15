"""The XConv layers as drop-in replacements: construction, dtypes, memory formats, errors.

Bit-identity with the plain layers over torch's own conv test inputs: test_module_inputs.py.
"""
import pytest
import torch
import torch.nn as nn

import xconv
from layer_pairs import PLAIN_TO_XCONV, layer_pair
from single_thread import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)


@pytest.mark.parametrize("plain_cls", list(PLAIN_TO_XCONV))
def test_takes_every_argument_of_the_plain_layer_and_is_a_subclass(plain_cls):
    kwargs = dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, dilation=1,
                  groups=2, bias=False, padding_mode="zeros")
    layer = PLAIN_TO_XCONV[plain_cls](**kwargs, probes=4, probe="gaussian")
    assert isinstance(layer, plain_cls)
    assert (layer.probes, layer.probe) == (4, "gaussian")
    assert "probes=4" in repr(layer)
    assert set(layer.state_dict()) == set(plain_cls(**kwargs).state_dict())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
def test_dtypes(dtype, probe):
    plain, converted = layer_pair(nn.Conv2d, dtype=dtype, probes=8, probe=probe, in_channels=3,
                                  out_channels=5, kernel_size=3, padding=1)
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    x_plain, x_conv = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = converted(x_conv)
    assert torch.equal(out, plain(x_plain))
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    plain(x_plain).backward(grad_out)
    assert converted.weight.grad.dtype == dtype and torch.isfinite(converted.weight.grad).all()
    # Input and bias gradients come from the native kernel calls torch's own backward makes.
    assert torch.equal(x_conv.grad, x_plain.grad)
    assert torch.equal(converted.bias.grad, plain.bias.grad)


@pytest.mark.parametrize("probe", ["channel", "gaussian"])
def test_channels_last_gives_the_same_estimate_for_the_same_seed(probe):
    plain, converted = layer_pair(nn.Conv2d, dtype=torch.float32, probes=8, probe=probe, in_channels=4,
                                  out_channels=6, kernel_size=3, padding=1)
    x = torch.randn(2, 4, 7, 9)
    grad_out = torch.randn(2, 6, 7, 9)
    grads = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        layer = converted.to(memory_format=memory_format)
        layer.zero_grad()
        xconv.manual_seed(7)
        out = layer(x.to(memory_format=memory_format))
        assert torch.equal(out, plain(x))
        out.backward(grad_out.to(memory_format=memory_format))
        grads.append(layer.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)


def test_transposed_layer_honours_output_size():
    plain, converted = layer_pair(nn.ConvTranspose2d, dtype=torch.float32, probes=4, in_channels=2,
                                  out_channels=3, kernel_size=3, stride=2, padding=1)
    x = torch.randn(2, 2, 5, 5, requires_grad=True)
    out = converted(x, output_size=[10, 10])
    assert out.shape == (2, 3, 10, 10)
    assert torch.equal(out, plain(x, output_size=[10, 10]))
    out.sum().backward()
    assert converted.weight.grad.shape == converted.weight.shape


def test_frozen_weight_or_no_grad_uses_the_plain_path():
    layer = xconv.XConv2d(2, 2, 3, probes=4)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    layer.weight.requires_grad_(False)
    out = layer(x)
    assert out.grad_fn.name() != "XConvFunctionBackward"
    with torch.no_grad():
        assert layer(x).grad_fn is None


@pytest.mark.parametrize("probes,error,fragment", [
    (-3, ValueError, "probes must be an integer >= 0 (0 = exact backprop), got -3"),
    (2.5, TypeError, "got 2.5"),
    (True, TypeError, "got True"),
    ("16", TypeError, "got '16'"),
])
def test_bad_probe_count_is_a_clear_error(probes, error, fragment):
    with pytest.raises(error, match="probes must be an integer >= 0") as info:
        xconv.XConv2d(2, 2, 3, probes=probes)
    assert fragment in str(info.value)


def test_unknown_probe_kind_is_a_clear_error():
    with pytest.raises(ValueError) as info:
        xconv.XConv2d(2, 2, 3, probe="foo")
    assert str(info.value) == ("probe must be one of 'channel', 'gaussian', 'rademacher', "
                               "'orthogonal', got 'foo'")


@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
def test_large_probe_counts_are_drawn_in_chunks_and_stay_unbiased(monkeypatch, probe):
    """With a tiny chunk budget the probes come in several chunks; backward must
    redraw exactly the chunks forward drew, or the estimate loses its mean."""
    from xconv import estimator
    from xconv.probes import probe_kind
    from stats import assert_unbiased
    monkeypatch.setattr(estimator, "_CHUNK_FLOOR_ELEMENTS", 400)
    monkeypatch.setattr(estimator, "_CHUNK_FRACTION_OF_INPUT", 10**9)
    plain, converted = layer_pair(nn.Conv2d, probes=20, probe=probe, in_channels=2,
                                  out_channels=3, kernel_size=3, padding=1)
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    chunk = estimator._chunk_size(20, probe_kind(probe).layout.per_probe_elements(
        converted.geometry(), x.shape, plain(x).shape, plain.weight.shape), x.numel())
    assert 1 < chunk < 20
    plain(x).sum().backward()
    estimates = []
    for _ in range(200):
        converted.zero_grad()
        converted(x).sum().backward()
        estimates.append(converted.weight.grad.clone())
    assert_unbiased(torch.stack(estimates), plain.weight.grad)
