"""xconv.convert on real networks, torchvision's ResNet-18 and smp's U-Net (timm-style: every parameter
gets a finite gradient). The library's own conversion tests: tests/xconv/test_convert.py."""
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torchvision

import xconv


def resnet18():
    return torchvision.models.resnet18(num_classes=10)


def unet():
    return smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=2)


MODELS = {"resnet18": (resnet18, (2, 3, 64, 64)), "smp_unet": (unet, (2, 3, 64, 64))}


def count_kinds(model):
    kinds = {}
    for module in model.modules():
        kinds[type(module).__name__] = kinds.get(type(module).__name__, 0) + 1
    return kinds


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
def test_every_parameter_gets_a_finite_gradient(name, probe):
    build, shape = MODELS[name]
    model = build()
    convs = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
    parameters = list(model.parameters())
    xconv.convert(model, probes=8, probe=probe, relu=True)
    assert list(model.parameters()) == parameters  # the same Parameter objects, in the same order
    assert len(list(xconv.xconv_layers(model))) == convs
    assert count_kinds(model).get("ReLU", 0) == 0
    model(torch.randn(shape)).square().mean().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_dict_round_trips_between_plain_and_converted(name):
    build, _ = MODELS[name]
    plain, converted = build(), xconv.convert(build(), probes=4, relu=True)
    assert list(plain.state_dict()) == list(converted.state_dict())
    converted.load_state_dict(plain.state_dict())
    fresh = build()
    fresh.load_state_dict(converted.state_dict())
    for a, b in zip(fresh.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
