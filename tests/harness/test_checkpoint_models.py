"""Gradient checkpointing on the models of torchvision, smp and the harness: their parts, and exactness.

The library's own checkpointing tests (modes, segments, BatchNorm, RNG, memory, on
torch-only models): tests/xconv/test_checkpoint.py.
"""
import copy

import pytest
import torch
import torchvision

import xconv
from xconv_harness.models.classification import CifarNet, MnistNet
from xconv_harness.models.dip import SkipNet
from xconv_harness.models.segmentation import smp_unet
from xconv_harness.models.unet import DiffusionUNet


def test_parts_of_torchvision_resnet_and_smp_unet():
    parts = xconv.checkpoint.find_sequential_parts(torchvision.models.resnet18())
    assert [(p.name, p.chain, len(p.units)) for p in parts] == [(f"layer{i}", True, 2) for i in range(1, 5)]
    unet_parts = {p.name: p for p in xconv.checkpoint.find_sequential_parts(smp_unet())}
    assert {f"encoder.layer{i}" for i in range(1, 5)} <= set(unet_parts)
    assert all(not unet_parts[f"decoder.blocks.{i}"].chain for i in range(5))  # decoder blocks: one unit each
    # Sqrt: n = 8 residual blocks -> segments of round(sqrt(8)) = 3 units, one per stage here.
    plan = xconv.checkpoint_sequential(torchvision.models.resnet18(), "sqrt")
    assert (plan.units, plan.segment_length, len(plan.segments)) == (8, 3, 4)


def harness_models():
    """(name, model factory, inputs, dtype) for each model of conf/model, at test size."""
    return [
        ("mnist_net", lambda: MnistNet(), (torch.randn(3, 1, 28, 28),), torch.float64),
        ("cifar_net", lambda: CifarNet(), (torch.randn(2, 3, 32, 32),), torch.float64),
        ("ddpm_unet", lambda: DiffusionUNet(dropout=0.3), (torch.randn(2, 1, 16, 16), torch.tensor([3, 700])),
         torch.float32),
        ("skip_net", lambda: SkipNet(channels_down=[8, 8, 8], channels_up=[8, 8, 8], channels_skip=[4, 4, 4]),
         (torch.randn(1, 32, 16, 16),), torch.float64),
        ("smp_unet", lambda: smp_unet(), (torch.randn(2, 3, 32, 32),), torch.float64),
        ("resnet18", lambda: torchvision.models.resnet18(num_classes=5), (torch.randn(2, 3, 32, 32),),
         torch.float64),
    ]


def model_at(factory, dtype, probes):
    torch.manual_seed(0)
    model = factory().to(dtype).train()
    return xconv.convert(model, probes=probes) if probes else model


def step(model, inputs):
    """Gradients and buffers after one forward/backward from torch (and so XConv) seed 0."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    model(*inputs).pow(2).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, {n: b.clone() for n, b in model.named_buffers()}


def assert_same_step(reference, checkpointed, dtype):
    """Gradients equal to rounding; BatchNorm statistics and counters exactly (one update per step)."""
    tolerance = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(checkpointed[0], reference[0], **tolerance)
    torch.testing.assert_close(checkpointed[1], reference[1], rtol=0, atol=0)


@pytest.mark.parametrize("name,factory,inputs,dtype", harness_models(), ids=[m[0] for m in harness_models()])
@pytest.mark.parametrize("mode", ["sqrt", "every:1"])
def test_gradients_and_buffers_equal_exact_backprop(name, factory, inputs, dtype, mode):
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    reference_model = model_at(factory, dtype, probes=0)
    model = copy.deepcopy(reference_model)
    plan = xconv.checkpoint_sequential(model, mode)
    assert plan.segments, f"{name}: nothing to checkpoint"
    assert_same_step(step(reference_model, inputs), step(model, inputs), dtype)


@pytest.mark.parametrize("name,factory,inputs,dtype",
                         [m for m in harness_models() if m[0] in ("ddpm_unet", "smp_unet", "resnet18")],
                         ids=["ddpm_unet", "smp_unet", "resnet18"])
def test_xconv_inside_recomputed_segments_draws_the_same_probes(name, factory, inputs, dtype):
    """XConv + checkpointing gives the very estimate XConv alone gives from the same seed."""
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    reference_model = model_at(factory, dtype, probes=4)
    model = copy.deepcopy(reference_model)
    xconv.checkpoint_sequential(model, "every:1")
    reference, after_reference = step(reference_model, inputs), xconv.get_rng_state()
    assert_same_step(reference, step(model, inputs), dtype)
    # Recomputation drew no extra seeds: XConv's generator ends where it ends without checkpointing.
    assert torch.equal(xconv.get_rng_state(), after_reference)
