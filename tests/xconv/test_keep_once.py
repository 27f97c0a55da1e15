"""Keep once (xconv.keep_once, convert(example_input=...)): a converted layer whose kept tensor another layer
keeps anyway goes back to torch's layer, so converting with an example never keeps more than without."""
import copy

import pytest
import torch
import torch.nn as nn

import xconv
from xconv.convert import left_plain
from xconv.keep_once import TORCH_KEEPS, torch_keeps
from xconv.memory import SavedTensorMeter, _storage_key

from tiny_models import TinyResNet


def _takes_inplace(kind: type) -> bool:
    try:
        kind(inplace=True)
    except TypeError:
        return False
    return True


CASES = [(kind, inplace) for kind in TORCH_KEEPS for inplace in ((False, True) if _takes_inplace(kind) else (False,))]


def _layer(kind: type, inplace: bool) -> nn.Module:
    if kind in (nn.GroupNorm,):
        return kind(2, 4)
    if kind is nn.LayerNorm:
        return kind([4, 6, 6])
    if kind.__name__.startswith(("BatchNorm", "InstanceNorm")):
        return kind(4)
    return kind(inplace=True) if inplace else kind()


@pytest.mark.parametrize("kind,inplace", CASES, ids=[f"{k.__name__}{'-inplace' if i else ''}" for k, i in CASES])
def test_the_table_says_which_tensor_torch_keeps(kind, inplace):
    """Between two convolutions, the storages torch's layer saves include its input's, its output's, or
    neither (a private copy), as :func:`torch_keeps` says."""
    dims = 1 if kind.__name__.endswith("1d") else 3 if kind.__name__.endswith("3d") else 2
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    model = nn.Sequential(conv(4, 4, 3, padding=1), _layer(kind, inplace), conv(4, 4, 3, padding=1)).train()
    seen = {}
    model[1].register_forward_pre_hook(lambda m, args: seen.update(input=_storage_key(args[0])))
    model[1].register_forward_hook(lambda m, args, out: seen.update(output=_storage_key(out)))
    with SavedTensorMeter(model) as meter:
        model(torch.randn(2, 4, *(6,) * dims))
    kept = meter.storages_by_module["1"]
    which = torch_keeps(kind, inplace)
    if inplace:
        assert seen["input"] == seen["output"]
    if which is None:
        assert seen["input"] not in kept and seen["output"] not in kept
    else:
        assert seen[which] in kept
        other = "output" if which == "input" else "input"
        assert seen[other] == seen[which] or seen[other] not in kept


class Bottleneck(nn.Module):
    """ResNet-50's pattern: plain ReLUs keep every convolution's input, one ReLU module called twice."""

    def __init__(self, width=8):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(width, width, 1), nn.Conv2d(width, width, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(width), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def bottlenecks():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                         Bottleneck(), Bottleneck(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).train()


def saved(model, x) -> int:
    with SavedTensorMeter() as meter:
        model(x)
    return meter.total_bytes


@pytest.mark.parametrize("mode", [dict(probes=4), dict(probes=0, activations="lossless"),
                                  dict(probes=4, activations="lossless"), dict(probes=4, activations="compact")],
                         ids=["xconv", "lossless", "xconv+lossless", "xconv+compact"])
def test_with_an_example_no_mode_keeps_more_than_without_or_than_exact(mode):
    torch.manual_seed(0)
    base, x = bottlenecks(), torch.randn(4, 3, 16, 16)
    exact = saved(copy.deepcopy(base), x)
    without = saved(xconv.convert(copy.deepcopy(base), **mode), x)
    model = xconv.convert(copy.deepcopy(base), example_input=x, **mode)
    # the dry runs changed no state (BatchNorm statistics), so the eval forward is torch's bit for bit
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(model).eval()(x), copy.deepcopy(base).eval()(x))
    assert saved(model, x) <= min(without, exact)


def test_xconv_after_plain_relus_goes_back_to_the_plain_convolution():
    """Every 3x3 / 1x1 convolution of the bottlenecks takes a plain ReLU's output, which the ReLU keeps: its
    sketch would be extra memory, so it is left plain, named with the layer that keeps its input; the stem
    (its input is the image, kept by nobody) stays XConv. With 1-bit ReLUs nothing is kept twice."""
    torch.manual_seed(0)
    base, x = bottlenecks(), torch.randn(4, 3, 16, 16)
    model = xconv.convert(copy.deepcopy(base), probes=4, example_input=x)
    assert [name for name, _ in xconv.xconv_layers(model)] == ["0"]
    reasons = left_plain(model)
    assert set(reasons) == {"3.conv1", "3.conv2", "4.conv1", "4.conv2"}
    assert reasons["3.conv2"] == "its input is kept by 3.relu anyway"
    assert saved(model, x) < saved(xconv.convert(copy.deepcopy(base), probes=4), x)
    bits = xconv.convert(copy.deepcopy(base), probes=4, relu=True, example_input=x)
    assert left_plain(bits) == {} and len(list(xconv.xconv_layers(bits))) == 5


def test_a_bit_relu_before_plain_convolutions_goes_back_unless_one_of_its_calls_is_kept_by_nobody():
    """probes=0 + lossless: a plain convolution keeps each 1-bit ReLU's output, so the bits are extra and the
    ReLU goes back to torch's. The bottleneck's ReLU is called twice; its second output feeds the next block
    (kept there) except in the last block, whose output only the average pool reads (it keeps a shape):
    that ReLU keeps its bits."""
    torch.manual_seed(0)
    base, x = bottlenecks(), torch.randn(4, 3, 16, 16)
    model = xconv.convert(copy.deepcopy(base), probes=0, activations="lossless", example_input=x)
    assert set(left_plain(model)) == {"2", "3.relu"}
    assert type(model[4].relu) is xconv.BitReLU and type(model[3].relu) is nn.ReLU


def test_left_plain_names_the_layers_whose_sketch_is_not_smaller_too():
    torch.manual_seed(0)
    model = TinyResNet(widths=(64, 128, 256, 512)).train()
    xconv.convert(model, probes=16, relu=True, example_input=torch.randn(2, 3, 32, 32))
    assert left_plain(model) and all(reason for reason in left_plain(model).values())
    assert "no call's sketch would be smaller than its input" in left_plain(model).values()
    assert left_plain(xconv.unconvert(model)) == {}


def test_keep_once_false_is_the_papers_adaptive_xconv():
    torch.manual_seed(0)
    base, x = bottlenecks(), torch.randn(4, 3, 16, 16)
    model = xconv.convert(copy.deepcopy(base), probes=4, example_input=x, keep_once=False)
    assert len(list(xconv.xconv_layers(model))) == 5 and left_plain(model) == {}
    with pytest.raises(TypeError, match="keep_once must be True or False, got 'yes'"):
        xconv.convert(copy.deepcopy(base), probes=4, example_input=x, keep_once="yes")
