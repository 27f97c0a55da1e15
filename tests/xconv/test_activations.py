"""1-bit (Leaky)ReLU: exact outputs and gradients."""
import pytest
import torch
import torch.nn as nn

import xconv
from xconv.activations import pack_bits, unpack_bits

from tiny_models import Double


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


def reference_pack(mask: torch.Tensor) -> torch.Tensor:
    """Bit i of byte j is element 8j + i, written out one bit at a time."""
    flat = torch.nn.functional.pad(mask.reshape(-1).to(torch.int64), (0, -mask.numel() % 8)).view(-1, 8)
    return (flat << torch.arange(8)).sum(1).to(torch.uint8)


def test_packed_bits_are_the_reference_layout_at_every_length_and_offset():
    """The int64 multiply shortcut (whole words) and the padded copy (a ragged tail or a view that does
    not start on a word): bit i of byte j is element 8j + i, every byte value reached."""
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(2 ** 12 + 5, generator=generator) > 0.5
    for start in (0, 1, 3, 8):
        for length in (1, 7, 8, 9, 63, 64, 65, 2 ** 12):
            mask = base[start:start + length]
            packed = pack_bits(mask)
            assert torch.equal(packed, reference_pack(mask)), (start, length)
            assert torch.equal(unpack_bits(packed, mask.shape), mask)
    every_byte = torch.arange(256, dtype=torch.uint8).unsqueeze(1) >> torch.arange(8, dtype=torch.uint8) & 1
    assert torch.equal(pack_bits(every_byte.bool()), torch.arange(256, dtype=torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_relu_gradient_is_torchs_for_non_finite_and_strided_gradients(dtype):
    """torch's ReLU backward is ``x <= 0 ? 0 : grad``: +0 where the input was not positive even when the
    gradient is inf or NaN there (a product with the mask would give NaN), in every float type and for a
    gradient laid out unlike the input."""
    x = torch.randn(2, 3, 4, 5).to(dtype)
    grad = torch.randn(2, 3, 4, 5).to(dtype)
    grad.view(-1)[::3] = float("inf")
    grad.view(-1)[1::7] = float("nan")
    grad.view(-1)[2::5] = float("-inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        strided = grad.contiguous(memory_format=layout)
        results = []
        for module in (nn.ReLU(), xconv.BitReLU()):
            leaf = x.clone().requires_grad_()
            module(leaf * 1.0).backward(strided)
            results.append(leaf.grad)
        assert torch.equal(results[0].isnan(), results[1].isnan())
        assert torch.equal(results[0].nan_to_num(), results[1].nan_to_num())
        assert torch.equal(results[0].view(_int(dtype)), results[1].view(_int(dtype)))  # +0, not -0


def _int(dtype):
    return {2: torch.int16, 4: torch.int32, 8: torch.int64}[torch.empty(0, dtype=dtype).element_size()]


@pytest.mark.parametrize("make", [xconv.BitReLU, lambda: xconv.lossless.LosslessHardtanh(-1.0, 1.0)],
                         ids=["relu", "hardtanh"])
def test_backward_temporaries_are_the_gradients_and_a_byte_per_element(make):
    """Fake step on a float32 input of 64 MiB: backward holds the output and input gradients, the
    unpacked one-byte mask and its packed bytes as int32 indices (half a byte): at most 2 + 3/8 input
    bytes. A mask in the gradient's own width (4 bytes) would be 2 + 9/8."""
    from xconv.fake_peak import fake_peak

    shape = (16, 64, 128, 128)
    input_bytes = 4 * torch.Size(shape).numel()
    peak = fake_peak(nn.Sequential(make(), Double()), lambda: torch.randn(shape, requires_grad=True),
                     device="cpu")
    assert peak.phase == "backward"
    assert peak.by_category["temporaries"] <= (2 + 3 / 8) * input_bytes, peak
