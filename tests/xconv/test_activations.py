"""1-bit (Leaky)ReLU: exact outputs and gradients."""
import pytest
import torch
import torch.nn as nn

import xconv
from xconv.activations import pack_bits, unpack_bits


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (3, 5, 11), (2, 3, 4, 4)])
def test_pack_unpack_round_trip(shape):
    mask = torch.rand(shape) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


@pytest.mark.parametrize("plain,bit", [(nn.ReLU(), xconv.BitReLU()), (nn.LeakyReLU(0.2), xconv.BitLeakyReLU(0.2)),
                                       (nn.LeakyReLU(-0.5), xconv.BitLeakyReLU(-0.5))])
@pytest.mark.parametrize("inplace", [False, True])
def test_outputs_and_gradients_are_exact(plain, bit, inplace):
    bit.inplace = inplace  # the reference stays out of place (torch cannot do in-place negative slopes)
    x = torch.randn(4, 3, 5, 5)
    x[0, 0, 0, :2] = 0.0  # the kink: both must use the same one-sided derivative
    results = []
    for module in (plain, bit):
        leaf = x.clone().requires_grad_()
        out = module(leaf * 1.0)  # a non-leaf input, as inside a network (in-place needs one)
        grad_out = torch.linspace(-1, 1, out.numel()).view_as(out)
        out.backward(grad_out)
        results.append((out.detach(), leaf.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
