"""Every torchvision classification model, converted with an example input in each memory mode
(timm-style: one test over every model): the forward is torch's bit for bit, every parameter gets a
finite gradient, and the model keeps at most what the exact model keeps (xconv.keep_once and the
never-above-exact rule). The smallest model of a few families runs by default, every model with -m slow."""
import copy

import pytest
import torch
import torchvision

import xconv
from xconv.memory import SavedTensorMeter

MODES = {"xconv": dict(probes=16), "lossless": dict(probes=0, activations="lossless"),
         "xconv+lossless": dict(probes=16, activations="lossless"),
         "xconv+compact": dict(probes=16, activations="compact"),
         "xconv+compact+linear": dict(probes=16, activations="compact", linear="gaussian")}
DEFAULT = ("resnet18", "mobilenet_v3_small", "squeezenet1_0")
# input side: the models with a fixed or a minimum input size, else 64
SIDE = {"vit_b_16": 224, "vit_b_32": 224, "vit_l_16": 224, "vit_l_32": 224, "vit_h_14": 224, "maxvit_t": 224,
        "inception_v3": 80, "alexnet": 64, "googlenet": 64}
ALL = torchvision.models.list_models(module=torchvision.models)


def _build(name: str) -> torch.nn.Module:
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, num_classes=10, **kwargs).train()


def _forward(model, x, seed=0):
    torch.manual_seed(seed)  # dropout draws the same masks in every mode
    with SavedTensorMeter() as meter:
        out = model(x)
    return out, meter.total_bytes


def check_model(name: str) -> None:
    torch.manual_seed(0)
    base = _build(name)
    side = SIDE.get(name, 64)
    x = torch.randn(2, 3, side, side)
    exact_out, exact_bytes = _forward(copy.deepcopy(base), x)
    for mode, settings in MODES.items():
        model = xconv.convert(copy.deepcopy(base), example_input=x, **settings)
        out, kept = _forward(model, x)
        assert torch.equal(out, exact_out), (name, mode, "forward")
        assert kept <= exact_bytes, (name, mode, kept, exact_bytes)
        out.square().mean().backward()
        for parameter_name, parameter in model.named_parameters():
            if parameter.requires_grad:
                assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), (name, mode, parameter_name)


@pytest.mark.parametrize("name", DEFAULT)
def test_a_model_of_each_kind_in_every_mode(name):
    check_model(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in ALL if name not in DEFAULT])
def test_every_torchvision_classification_model_in_every_mode(name):
    check_model(name)
