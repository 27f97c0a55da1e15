"""xconv.convert on ResNet-18's layout at small widths (torch only). torchvision's ResNet-18 and smp's
U-Net: tests/harness/test_convert_models.py."""
import pytest
import torch
import torch.nn as nn

import xconv

from tiny_models import tiny_resnet18


def count_kinds(model):
    kinds = {}
    for module in model.modules():
        kinds[type(module).__name__] = kinds.get(type(module).__name__, 0) + 1
    return kinds


@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
def test_conversion_keeps_parameters_and_state_dict_and_every_gradient_is_finite(probe):
    plain, model = tiny_resnet18(), tiny_resnet18()
    parameters, keys = list(model.parameters()), list(model.state_dict())
    xconv.convert(model, probes=8, probe=probe, relu=True)
    assert list(model.parameters()) == parameters and list(model.state_dict()) == keys
    assert len(list(xconv.xconv_layers(model))) == 20 and "ReLU" not in count_kinds(model)
    model.load_state_dict(plain.state_dict())
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_probes_zero_gives_the_gradients_of_the_unconverted_model():
    torch.manual_seed(0)
    plain = tiny_resnet18()
    converted = tiny_resnet18()
    converted.load_state_dict(plain.state_dict())
    xconv.convert(converted, probes=16)
    assert xconv.set_probes(converted, 0) == 20
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, converted):
        model(x).sum().backward()
    for (name, a), b in zip(plain.named_parameters(), converted.parameters()):
        assert torch.equal(a.grad, b.grad), name


def test_set_probes_and_unconvert():
    model = xconv.convert(tiny_resnet18(), probes=16, relu=True)
    xconv.set_probes(model, 4, probe="gaussian")
    assert {(layer.probes, layer.probe) for _, layer in xconv.xconv_layers(model)} == {(4, "gaussian")}
    xconv.unconvert(model)
    kinds = count_kinds(model)
    assert kinds["Conv2d"] == 20 and kinds["ReLU"] == 9 and "XConv2d" not in kinds


def test_skip_by_pattern_and_predicate():
    model = xconv.convert(tiny_resnet18(), probes=4, skip=["conv1", "layer4.*"])
    names = {name for name, _ in xconv.xconv_layers(model)}
    assert "conv1" not in names and not any(n.startswith("layer4") for n in names)
    assert "layer1.0.conv1" in names
    model = xconv.convert(tiny_resnet18(), probes=4, skip=lambda name, module: getattr(module, "in_channels", 4) < 4)
    assert "conv1" not in {name for name, _ in xconv.xconv_layers(model)}


def test_example_input_leaves_layers_where_the_sketch_would_not_save_memory():
    """At 32x32 input, layer4 runs at 1x1: a 16-probe channel sketch (16 per channel)
    exceeds the 1 number per channel it replaces, so those layers stay exact."""
    model = xconv.convert(tiny_resnet18(), probes=16, example_input=torch.randn(1, 3, 32, 32))
    names = {name for name, _ in xconv.xconv_layers(model)}
    assert not any(n.startswith("layer4") for n in names)
    assert "layer1.0.conv1" in names and "conv1" in names  # 16x16 and 32x32 inputs do save
    assert type(model.layer4[0].conv1) is nn.Conv2d


def test_bad_arguments_are_clear_errors():
    with pytest.raises(TypeError, match="convert expects a torch.nn.Module, got str"):
        xconv.convert("resnet18")
    with pytest.raises(ValueError, match="probes must be an integer >= 0 .*got -1"):
        xconv.convert(tiny_resnet18(), probes=-1)
    with pytest.raises(ValueError, match="probe must be one of .* got 'gauss'"):
        xconv.convert(tiny_resnet18(), probe="gauss")
    with pytest.raises(TypeError, match="skip must be"):
        xconv.convert(tiny_resnet18(), skip=5)
    with pytest.raises(TypeError, match="relu must be True or False, got 'bit'"):
        xconv.convert(tiny_resnet18(), relu="bit")


def test_unconvertible_subclass_is_named_in_a_warning():
    class MyConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(MyConv(3, 3, 3), nn.Conv2d(3, 3, 3))
    with pytest.warns(UserWarning, match=r"0 \(MyConv\)"):
        xconv.convert(model)
    assert type(model[0]) is MyConv and type(model[1]) is xconv.XConv2d


def test_example_input_dry_run_changes_no_state():
    model = tiny_resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xconv.convert(model, probes=16, example_input=torch.randn(2, 3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def small_net_with_every_saver() -> nn.Sequential:
    """Convolutions, norms, pools, dropout and activations of every kind the savers replace."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU6(), nn.Dropout2d(0.2),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 8, 1), nn.Hardtanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3),
        nn.Linear(8, 4), nn.GELU())


@pytest.mark.parametrize("activations", ["lossless", "compact"])
def test_activations_swap_the_savers_of_their_mode_and_unconvert_undoes_it(activations):
    model = small_net_with_every_saver()
    parameters, keys = list(model.parameters()), list(model.state_dict())
    before = [type(module) for module in model.modules()]
    xconv.convert(model, probes=0, activations=activations)
    after = count_kinds(model)
    assert list(model.parameters()) == parameters and list(model.state_dict()) == keys
    assert {"BitReLU", "LosslessMaxPool2d", "LosslessReLU6", "LosslessDropout2d", "LosslessAvgPool2d",
            "LosslessHardtanh", "LosslessDropout"} <= set(after)
    compact = {"CompactBatchNorm2d", "CompactGroupNorm", "CompactSiLU", "CompactGELU"}
    assert compact <= set(after) if activations == "compact" else not compact & set(after)
    xconv.unconvert(model)
    assert [type(module) for module in model.modules()] == before


def test_lossless_activations_at_probes_zero_give_torchs_gradients_bit_for_bit_with_less_memory():
    torch.manual_seed(0)
    plain, lossless = small_net_with_every_saver(), small_net_with_every_saver()
    lossless.load_state_dict(plain.state_dict())
    xconv.convert(lossless, probes=0, activations="lossless")
    x = torch.randn(4, 3, 16, 16)
    kept, outputs = {}, {}
    for name, model in (("plain", plain), ("lossless", lossless)):
        torch.manual_seed(1)  # the same dropout draws
        out = model(x)
        kept[name] = xconv.memory.kept_bytes(out, parameters=list(model.parameters()))
        out.square().sum().backward()
        outputs[name] = out
    assert torch.equal(outputs["plain"], outputs["lossless"])
    for p, q in zip(plain.parameters(), lossless.parameters()):
        assert torch.equal(p.grad, q.grad)
    assert kept["lossless"] < 0.7 * kept["plain"]  # norms and SiLU/GELU still keep full tensors here


def test_an_unknown_activation_mode_is_one_clear_error():
    with pytest.raises(ValueError, match="activations must be one of exact, lossless, compact, got 'bits'"):
        xconv.convert(small_net_with_every_saver(), activations="bits")
