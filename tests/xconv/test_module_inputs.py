"""The XConv layers as drop-ins over every input torch's own conv module tests use.

The cases (``conv_module_inputs.CASES``) are the constructor arguments and inputs of torch's
conv module tests, batched and unbatched, every padding mode and ``padding="same"``. For each:

* ``probes=0``: output, input, bias and weight gradients bit-identical to the plain layer;
* ``probes>0``, every probe kind: output, input and bias gradients bit-identical (the
  estimator takes them from the same native kernel calls as torch's backward; on CPU torch
  is deterministic for all of these, so ``torch.equal`` holds), weight gradient of the
  weight's shape and finite; an unbatched input gives the very estimate of its batch of one.
"""
import pytest
import torch

import xconv
from conv_module_inputs import CASES
from layer_pairs import PLAIN_TO_XCONV
from single_thread import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel lengths:UserWarning")

DTYPES = [torch.float64, torch.float32]
PROBES = 3


def make_pair(case, dtype, probes, probe="channel"):
    """The plain layer of ``case`` and its XConv twin with the same weights, always sketching (some
    inputs here are smaller than their sketch; the fallback to exact is tested in
    test_never_above_exact.py)."""
    plain = case.plain_cls(*case.args, **case.kwargs).to(dtype)
    converted = PLAIN_TO_XCONV[case.plain_cls](*case.args, **case.kwargs, probes=probes, probe=probe,
                                               fallback=False).to(dtype)
    converted.load_state_dict(plain.state_dict())
    return plain, converted


def output_gradient(layer, x):
    """A random output gradient for ``layer`` at ``x``."""
    with torch.no_grad():
        return torch.randn_like(layer(x))


def forward_backward(layer, x, grad_out):
    """``(output, input gradient)`` of one forward and backward of ``layer`` at a copy of ``x``."""
    x = x.clone().requires_grad_()
    out = layer(x)
    out.backward(grad_out)
    return out, x.grad


def assert_same_as_plain(plain, converted, x, what: str):
    """Output, input gradient and bias gradient of ``converted`` bit-identical to ``plain``'s."""
    grad_out = output_gradient(plain, x)
    out, grad_x = forward_backward(plain, x, grad_out)
    converted_out, converted_grad_x = forward_backward(converted, x, grad_out)
    assert converted_out.shape == out.shape, what
    assert torch.equal(converted_out, out), f"{what}: forward"
    assert torch.equal(converted_grad_x, grad_x), f"{what}: input gradient"
    if plain.bias is not None:
        assert torch.equal(converted.bias.grad, plain.bias.grad), f"{what}: bias gradient"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_probes_zero_is_the_plain_layer(case, dtype):
    plain, converted = make_pair(case, dtype, probes=0)
    assert_same_as_plain(plain, converted, torch.randn(case.input_size, dtype=dtype), case.name)
    assert torch.equal(converted.weight.grad, plain.weight.grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_estimator_keeps_forward_input_and_bias_gradients_exact(case, dtype):
    x = torch.randn(case.input_size, dtype=dtype)
    for probe in xconv.PROBE_KINDS:
        plain, converted = make_pair(case, dtype, PROBES, probe)
        assert_same_as_plain(plain, converted, x, f"{case.name}, probe={probe}")
        grad_w = converted.weight.grad
        assert grad_w.shape == converted.weight.shape and grad_w.dtype == dtype
        assert torch.isfinite(grad_w).all(), f"{case.name}, probe={probe}: weight gradient"


@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
@pytest.mark.parametrize("case", [case for case in CASES if case.name.endswith("_no_batch_dim")],
                         ids=lambda case: case.name)
def test_unbatched_input_is_estimated_as_a_batch_of_one(case, probe):
    """Same seed, same probes: the weight-gradient estimate of ``(C, *spatial)`` is the one of
    ``(1, C, *spatial)``, and the output has no batch dimension, as torch's."""
    _, converted = make_pair(case, torch.float64, PROBES, probe)
    x = torch.randn(case.input_size, dtype=torch.float64)
    grad_out = output_gradient(converted, x)
    estimates = []
    for batch, grad in ((x, grad_out), (x.unsqueeze(0), grad_out.unsqueeze(0))):
        converted.zero_grad()
        xconv.manual_seed(3)
        out, _ = forward_backward(converted, batch, grad)
        assert out.shape == grad.shape
        estimates.append(converted.weight.grad.clone())
    assert estimates[0].abs().sum() > 0
    assert torch.equal(estimates[0], estimates[1])


@pytest.mark.parametrize("probes", [0, PROBES])
def test_unbatched_transposed_layer_honours_output_size(probes):
    plain, converted = make_pair(CASES[0]._replace(plain_cls=torch.nn.ConvTranspose2d, args=(2, 3, 3),
                                                   kwargs={"stride": 2, "padding": 1}),
                                 torch.float64, probes)
    x = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    out = converted(x, output_size=[10, 10])
    assert out.shape == (3, 10, 10)
    assert torch.equal(out, plain(x, output_size=[10, 10]))
    out.sum().backward()
    assert x.grad.shape == x.shape and converted.weight.grad.shape == converted.weight.shape


@pytest.mark.parametrize("plain_cls,shape", [(torch.nn.Conv1d, (3,)), (torch.nn.Conv2d, (2, 3)),
                                             (torch.nn.Conv3d, (1, 2, 3, 4, 5, 6)),
                                             (torch.nn.ConvTranspose2d, (2, 3))])
def test_input_of_the_wrong_dimension_gets_torchs_own_one_line_error(plain_cls, shape):
    plain = plain_cls(2, 2, 1)
    x = torch.randn(shape, requires_grad=True)
    with pytest.raises(RuntimeError) as expected:
        plain(x)
    with pytest.raises(RuntimeError) as got:
        PLAIN_TO_XCONV[plain_cls](2, 2, 1, probes=PROBES)(x)
    assert str(got.value) == str(expected.value)
    assert "\n" not in str(got.value)
