"""xconv.memory.kept_tensors: what the autograd graph keeps, found by walking it.

The walk is the second, independent count beside the saved-tensor hooks of SavedTensorMeter:
on plain torch models the two agree; a custom Function that keeps a tensor as a ctx attribute
is seen by the walk only.
"""
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

import xconv
from xconv.memory import SavedTensorMeter, kept_bytes, kept_tensors


@dataclass
class Record:
    tensor: torch.Tensor
    label: str = "kept"


class KeepsTensorsAsAttributes(torch.autograd.Function):
    """``y = 2 x``; saves one tensor properly and keeps four more as ctx attributes, one per
    way a Function can hold them (directly, in a list, nested in a dict of tuples, in a dataclass)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(torch.ones(1))                       # 4 bytes
        ctx.direct = torch.ones(2)                                 # 8
        ctx.listed = [torch.ones(4), 3]                            # 16
        ctx.nested = {"a": (torch.ones(8),), "b": None}            # 32
        ctx.record = Record(torch.ones(16))                        # 64
        ctx.shape, ctx.factor = x.shape, 2.0
        return x * ctx.factor

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor


class KeepsItsInput(torch.autograd.Function):
    """``y = x + 1`` keeping ``x`` itself, a view of it, and ``weight``, all as attributes."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.inputs = (x, x[0], weight)
        return x + 1

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def metered(model, x):
    """The hooks' count and the walk's, on one forward under the meter and one without it."""
    with SavedTensorMeter(model) as meter:
        out = model(x)
    return meter.total_bytes, kept_bytes(out), kept_bytes(model(x))


@pytest.mark.parametrize("model,shape", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3)), (2, 3, 10, 10)),
    (nn.Sequential(nn.Conv1d(3, 4, 3), nn.Tanh(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(12, 5), nn.Sigmoid()),
     (2, 3, 8)),
    (nn.Sequential(nn.ConvTranspose2d(3, 2, 3, stride=2), nn.LeakyReLU(), nn.GroupNorm(1, 2), nn.Softplus()),
     (2, 3, 5, 5)),
    (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(inplace=True),
                   nn.AdaptiveAvgPool2d(1)), (2, 3, 6, 6)),
])
def test_the_walk_agrees_with_the_hooks_on_plain_torch_models(model, shape):
    x = torch.randn(shape, requires_grad=True)
    hooks, walk_under_hooks, walk = metered(model, x)
    assert hooks > x.numel() * 4
    assert walk_under_hooks == hooks and walk == hooks


def test_the_walk_sees_tensors_kept_as_ctx_attributes_and_the_hooks_do_not():
    x = torch.randn(3, requires_grad=True)
    with SavedTensorMeter() as meter:
        out = KeepsTensorsAsAttributes.apply(x)
    assert meter.total_bytes == 4
    kept = {k.where: k.nbytes for k in kept_tensors(out)}
    assert kept == {"saved_tensors[0]": 4, "ctx.direct": 8, "ctx.listed[0]": 16, "ctx.nested['a'][0]": 32,
                    "ctx.record.tensor": 64}
    assert {k.node for k in kept_tensors(out)} == {"KeepsTensorsAsAttributesBackward"}
    assert kept_bytes(out) == 4 + 8 + 16 + 32 + 64


def test_storages_count_once_and_parameters_not_at_all():
    weight = nn.Parameter(torch.ones(100))
    x = torch.randn(5, 6, requires_grad=True)
    out = KeepsItsInput.apply(x, weight)
    assert kept_tensors(out) == [kept_tensors(out)[0]]  # x and its view x[0]: one storage
    assert kept_bytes(out) == x.numel() * 4  # the parameter is left out
    assert kept_bytes(out.sum(), out.neg()) == x.numel() * 4  # two outputs, one graph: still once
    # A frozen parameter under the meter's hooks is saved as a detached alias: name it to exclude it.
    conv = nn.Conv2d(3, 2, 3).requires_grad_(False)
    image = torch.randn(1, 3, 5, 5, requires_grad=True)
    with SavedTensorMeter(conv):
        out = conv(image)
    assert kept_bytes(out) == image.numel() * 4 + conv.weight.numel() * 4
    assert kept_bytes(out, parameters=conv.parameters()) == image.numel() * 4


def test_after_backward_only_ctx_attributes_are_left():
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    out = xconv.XConv2d(4, 4, 3, probes=2)(x)
    leaky = KeepsTensorsAsAttributes.apply(x)
    assert kept_bytes(out) == 2 * 2 * 4 * 4 and kept_bytes(leaky) == 124
    (out.sum() + leaky.sum()).backward()
    assert kept_bytes(out) == 0
    assert kept_bytes(leaky) == 124 - 4  # backward freed the saved tensor, not the attributes


def test_a_tensor_without_a_graph_keeps_nothing():
    assert kept_tensors(torch.randn(3)) == [] and kept_bytes(torch.randn(3, requires_grad=True)) == 0
