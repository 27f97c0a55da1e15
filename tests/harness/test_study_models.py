"""The networks added for the gradient studies: plain 2D/3D U-Net and VanillaNet-10."""
import pytest
import torch
import torch.nn as nn

import xconv
from xconv_harness.models.unet_plain import PlainUNet
from xconv_harness.models.vanillanet import VARIANTS, SeriesActivation, vanillanet


def test_plain_unet_2d_layout_and_shapes():
    model = PlainUNet(in_channels=3, out_channels=2, base=32, depth=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 * 5 + 2 * 4 + 1  # double convs down, double convs up, 1x1 head
    assert [block[0].out_channels for block in model.down] == [32, 64, 128, 256, 512]
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 48)).shape == (2, 2, 32, 48)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 16"):
        model(torch.randn(1, 3, 24, 32))
    with pytest.raises(ValueError, match="dims=4: must be 2 or 3"):
        PlainUNet(dims=4)


def test_plain_unet_3d_trains_through_xconv():
    model = PlainUNet(in_channels=1, out_channels=1, base=4, depth=2, dims=3)
    assert all(not isinstance(m, nn.Conv2d) for m in model.modules())
    xconv.convert(model, probes=4)
    model(torch.randn(2, 1, 8, 8, 8)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_vanillanet_10_layout():
    dims, strides = VARIANTS["vanillanet_10"]
    model = vanillanet("vanillanet_10")
    assert [stage.conv2[0].out_channels for stage in model.stages] == dims[1:]
    assert [isinstance(stage.pool, nn.MaxPool2d) for stage in model.stages] == [s > 1 for s in strides]
    # The series activation's depthwise 7x7 is a Parameter used through F.conv2d, so XConv leaves it exact.
    activations = [m for m in model.modules() if isinstance(m, SeriesActivation)]
    assert len(activations) == 1 + len(strides) and activations[0].weight.shape[-2:] == (7, 7)
    assert len([m for m in model.modules() if isinstance(m, nn.Conv2d)]) == 2 + 2 * len(strides) + 2
    model.train()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    with pytest.raises(ValueError, match="name='vanillanet_99'"):
        vanillanet("vanillanet_99")
