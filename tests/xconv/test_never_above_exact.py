"""A layer never keeps more than plain PyTorch would (xconv.layers, "Never more than exact").

Each XConv call compares its sketch with its input, per sample. Where the sketch
would not be smaller (channel probes: ``r >= prod(spatial)``; the other kinds:
``r >= C_in * prod(spatial)``) the call is the plain layer: the same output, the
same input, weight and bias gradients (``torch.equal``), the same bytes kept for
backward, counted as a fallback. Where it is smaller the call sketches and keeps
less. ``fallback=False`` and ``xconv.layers.force_sketch()`` opt out;
``xconv.convert(example_input=...)`` applies the same rule ahead of time.

The ResNet-18 layout (torchvision's widths) on CIFAR-sized 3x32x32 images with 16
channel probes kept 1.47x the exact bytes before this rule (its last stages run at
4x4, 2x2 and 1x1); now at most the exact bytes.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn as nn

import xconv
from xconv.layers import XConvCalls, force_sketch, sketch_saves_memory, sketching_forced
from xconv.memory import SavedTensorMeter, fallback_report, kept_bytes
from xconv.probes import probe_kind

from layer_pairs import PLAIN_TO_XCONV
from single_thread import one_torch_thread  # noqa: F401  (autouse: tiny tensors, one thread)
from tiny_models import TinyResNet

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel lengths:UserWarning")


class Case(NamedTuple):
    """A plain layer class and its arguments, an input too small for a sketch and one large enough."""

    plain: type
    kwargs: dict
    tiny: tuple[int, ...]  # (B, C_in, *spatial), or (C_in, *spatial) unbatched
    large: tuple[int, ...]


CASES = {
    "1d": Case(nn.Conv1d, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1), (2, 4, 16), (2, 4, 64)),
    "1d-same-even-reflect": Case(nn.Conv1d, dict(in_channels=4, out_channels=6, kernel_size=4, padding="same",
                                                 padding_mode="reflect"), (2, 4, 12), (2, 4, 40)),
    "2d-stride-dilation-replicate": Case(nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=3, stride=2,
                                                         dilation=2, padding=2, padding_mode="replicate"),
                                         (2, 4, 4, 4), (2, 4, 12, 12)),
    "2d-circular-groups": Case(nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1,
                                               padding_mode="circular", groups=2), (2, 4, 3, 5), (2, 4, 8, 9)),
    "2d-same-depthwise-no-bias": Case(nn.Conv2d, dict(in_channels=4, out_channels=4, kernel_size=3, padding="same",
                                                      groups=4, bias=False), (2, 4, 4, 4), (2, 4, 10, 10)),
    "2d-valid-non-square": Case(nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=(3, 2),
                                                padding="valid"), (2, 4, 4, 4), (2, 4, 9, 8)),
    "2d-unbatched": Case(nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
                         (4, 3, 3), (4, 8, 8)),
    "3d": Case(nn.Conv3d, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1), (2, 4, 2, 2, 4),
               (2, 4, 4, 4, 4)),
    "3d-reflect": Case(nn.Conv3d, dict(in_channels=4, out_channels=3, kernel_size=3, padding=1,
                                       padding_mode="reflect"), (2, 4, 2, 2, 3), (2, 4, 4, 5, 4)),
    "transpose1d-output-padding": Case(nn.ConvTranspose1d, dict(in_channels=4, out_channels=6, kernel_size=3,
                                                                stride=2, output_padding=1), (2, 4, 10), (2, 4, 40)),
    "transpose2d-groups-dilation": Case(nn.ConvTranspose2d, dict(in_channels=4, out_channels=6, kernel_size=3,
                                                                 stride=2, padding=1, groups=2, dilation=2),
                                        (2, 4, 3, 4), (2, 4, 8, 8)),
    "transpose3d": Case(nn.ConvTranspose3d, dict(in_channels=4, out_channels=3, kernel_size=2, stride=2),
                        (2, 4, 2, 2, 2), (2, 4, 4, 4, 4)),
}
PROBES = ["channel", "gaussian"]  # one kind per sketch layout: r x C_in numbers, or r numbers, per sample


DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3, nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2,
        nn.ConvTranspose3d: 3}


def sample_shape(case: Case, shape) -> tuple[int, ...]:
    """``(C_in, *spatial)`` of one sample of an input of ``shape`` (batched or not)."""
    return tuple(shape) if len(shape) == DIMS[case.plain] + 1 else tuple(shape[1:])


def probes_matching(case: Case, probe: str) -> int:
    """The fewest probes whose sketch is no smaller than one sample of the tiny input: exactly as
    many numbers per sample (the boundary: it must fall back)."""
    channels, *spatial = sample_shape(case, case.tiny)
    per_probe = probe_kind(probe).numbers_per_sample(1, channels)
    return channels * math.prod(spatial) // per_probe


def pair(case: Case, probes: int, probe: str, **options):
    """The plain layer (float64) and its XConv twin with the same weights, each alone in a Sequential
    (so its name is "0")."""
    plain = case.plain(**case.kwargs).double()
    converted = PLAIN_TO_XCONV[case.plain](**case.kwargs, probes=probes, probe=probe, **options).double()
    converted.load_state_dict(plain.state_dict())
    return nn.Sequential(plain), nn.Sequential(converted)


def run(model: nn.Sequential, x: torch.Tensor, grad_out: torch.Tensor | None = None):
    """One metered forward and a backward of ``model`` at a copy of ``x``: the output, the meter, the
    bytes the graph keeps, and the input, weight and bias gradients."""
    x = x.clone().requires_grad_()
    with SavedTensorMeter(model) as meter:
        out = model(x)
    kept = kept_bytes(out, parameters=model.parameters())
    out.backward(torch.ones_like(out) if grad_out is None else grad_out)
    layer = model[0]
    return out, meter, kept, (x.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad)


def sketched(out: torch.Tensor) -> bool:
    """Whether ``out`` hangs on an XConv node (an unbatched output on it through a squeeze)."""
    node = out.grad_fn
    while node is not None and node.name() == "SqueezeBackward1":
        node = node.next_functions[0][0]
    return node is not None and node.name() == "XConvFunctionBackward"


def assert_equal_gradients(got, expected):
    for name, a, b in zip(("input", "weight", "bias"), got, expected):
        assert (a is None) == (b is None), name
        assert a is None or torch.equal(a, b), f"{name} gradient differs from the plain layer's"


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("name", CASES)
def test_a_call_whose_sketch_is_not_smaller_is_the_plain_layer_bit_for_bit(name, probe):
    case = CASES[name]
    probes = probes_matching(case, probe)
    plain, converted = pair(case, probes, probe)
    x = torch.randn(case.tiny, dtype=torch.float64)
    with torch.no_grad():
        grad_out = torch.randn_like(plain(x))
    out, meter, kept, grads = run(converted, x, grad_out)
    plain_out, plain_meter, plain_kept, plain_grads = run(plain, x, grad_out)

    assert torch.equal(out, plain_out) and out.grad_fn.name() == plain_out.grad_fn.name()
    assert_equal_gradients(grads, plain_grads)
    assert kept == plain_kept and meter.total_bytes == plain_meter.total_bytes  # never above exact
    shape = sample_shape(case, case.tiny)
    layer = converted[0]
    assert (layer.calls.sketched, layer.calls.exact, layer.calls.forced) == (0, 1, 0)
    assert meter.exact_fallbacks == {"0": 1}
    assert fallback_report(converted) == {"0": {
        "exact_calls": 1, "sketched_calls": 0, "forced_calls": 0,
        "no_saving": [{"input_shape": list(shape), "probes": probes, "probe": probe,
                       "sketch_numbers": math.prod(shape), "input_numbers": math.prod(shape), "calls": 1}]}}


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("name", CASES)
def test_a_call_whose_sketch_is_smaller_sketches_and_keeps_less(name, probe):
    case = CASES[name]
    probes = probes_matching(case, probe)  # the same layer as above, on the large input
    plain, converted = pair(case, probes, probe)
    x = torch.randn(case.large, dtype=torch.float64)
    out, meter, kept, grads = run(converted, x)
    plain_out, _, plain_kept, plain_grads = run(plain, x)

    assert torch.equal(out, plain_out) and sketched(out)
    shape = sample_shape(case, case.large)
    batch = math.prod(case.large) // math.prod(shape)
    assert kept == batch * probe_kind(probe).numbers_per_sample(probes, shape[0]) * 8 < plain_kept
    assert torch.equal(grads[0], plain_grads[0])  # the input gradient stays exact
    layer = converted[0]
    assert (layer.calls.sketched, layer.calls.exact, layer.calls.forced) == (1, 0, 0)
    assert meter.exact_fallbacks == {} and meter.xconv_calls == {"0": XConvCalls(sketched=1)}
    assert fallback_report(converted) == {}


@pytest.mark.parametrize("probe", PROBES)
def test_the_boundary_is_a_sketch_as_large_as_the_input(probe):
    x = torch.randn(3, 5, 4, 4)  # 16 positions, 80 numbers per sample
    equal = 16 if probe == "channel" else 80  # probes whose sketch holds exactly the input's numbers
    assert not sketch_saves_memory(probe, equal, (5, 4, 4)) and sketch_saves_memory(probe, equal - 1, (5, 4, 4))
    for probes, sketches in ((equal, False), (equal - 1, True), (equal + 1, False)):
        layer = xconv.XConv2d(5, 2, 3, padding=1, probes=probes, probe=probe)
        out = layer(x.requires_grad_())
        assert sketched(out) is sketches, probes
        assert (layer.calls.sketched, layer.calls.exact) == ((1, 0) if sketches else (0, 1))


def test_calls_that_cannot_use_the_estimator_are_not_counted():
    layer = xconv.XConv2d(2, 2, 3, probes=64)  # 64 channel probes on 4x4: every counted call falls back
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    with torch.no_grad():
        layer(x)
    xconv.set_probes(nn.Sequential(layer), 0)
    layer(x)
    layer.set_xconv(probes=64, probe="channel")
    layer.weight.requires_grad_(False)
    layer(x)
    assert layer.calls == XConvCalls()
    layer.weight.requires_grad_(True)
    layer(x)
    layer(x[0])  # unbatched
    assert (layer.calls.exact, layer.calls.total) == (2, 2)
    layer.calls.reset()
    assert layer.calls == XConvCalls()


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("name", ["2d-stride-dilation-replicate", "transpose1d-output-padding", "2d-unbatched"])
def test_force_sketch_and_fallback_false_opt_out(name, probe):
    case = CASES[name]
    probes = probes_matching(case, probe)
    plain, converted = pair(case, probes, probe)
    _, forced_layer = pair(case, probes, probe, fallback=False)
    x = torch.randn(case.tiny, dtype=torch.float64)
    shape = sample_shape(case, case.tiny)
    sketch_bytes = (math.prod(case.tiny) // math.prod(shape)) * math.prod(shape) * 8  # as many numbers as x
    assert not sketching_forced()
    with force_sketch():
        with force_sketch():  # blocks nest
            assert sketching_forced()
        assert sketching_forced()
        out, meter, kept, grads = run(converted, x)
    assert not sketching_forced()
    assert sketched(out) and kept == sketch_bytes
    _, _, plain_kept, plain_grads = run(plain, x)
    assert kept <= plain_kept  # the sketch holds as many numbers as the input (the plain layer may keep more)
    assert not torch.equal(grads[1], plain_grads[1])  # an estimate, not the exact weight gradient
    assert meter.exact_fallbacks == {} and meter.xconv_calls["0"].forced == 1
    layer = converted[0]
    assert (layer.calls.sketched, layer.calls.exact, layer.calls.forced) == (1, 0, 1)
    assert fallback_report(converted)["0"]["forced_calls"] == 1

    out, _, _, _ = run(converted, x)  # the block is closed: the layer falls back again
    assert not sketched(out) and layer.calls.exact == 1

    out, _, kept, _ = run(forced_layer, x)  # fallback=False: always sketches
    assert sketched(out) and kept == sketch_bytes
    assert (forced_layer[0].calls.sketched, forced_layer[0].calls.forced) == (1, 1)
    assert "fallback=False" in repr(forced_layer[0]) and "fallback" not in repr(layer)


def test_fallback_is_set_with_the_probes_and_checked():
    layer = xconv.XConv2d(2, 2, 3, probes=4)
    assert layer.fallback is True
    layer.set_xconv(probes=8, probe="gaussian", fallback=False)
    assert layer.fallback is False
    layer.set_xconv(probes=4, probe="channel")  # fallback left as it is
    assert layer.fallback is False
    xconv.set_probes(nn.Sequential(layer), 2)
    assert layer.fallback is False
    with pytest.raises(TypeError, match="fallback must be True or False, got 'no'"):
        layer.set_xconv(probes=4, probe="channel", fallback="no")
    converted = xconv.convert(nn.Sequential(nn.Conv2d(2, 2, 3)), probes=4)  # layers made by convert
    assert converted[0].fallback is True and converted[0].calls == XConvCalls()


class TwoScales(nn.Module):
    """Convolutions at 8x8 (64 positions) and 4x4 (16), and one shared layer called at both."""

    def __init__(self):
        super().__init__()
        self.large = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.small = nn.Conv2d(4, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = self.shared(self.large(x))
        return self.shared(self.small(self.pool(x)))


@pytest.mark.parametrize("probes", [8, 16, 64])
def test_convert_with_an_example_leaves_plain_exactly_the_layers_whose_every_call_falls_back(probes):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    per_call = xconv.convert(TwoScales(), probes=probes)
    per_call(x).sum().backward()
    always_exact = {name for name, report in fallback_report(per_call).items()
                    if report["sketched_calls"] == 0}
    ahead = xconv.convert(TwoScales(), probes=probes, example_input=x)
    plain = {name for name, module in ahead.named_children() if type(module) in PLAIN_TO_XCONV}
    assert plain == always_exact
    assert plain == {16: {"small"}, 64: {"large", "small", "shared"}}.get(probes, set())
    if probes == 16:  # the shared layer sketches at 8x8 and falls back at 4x4
        assert (per_call.shared.calls.sketched, per_call.shared.calls.exact) == (1, 1)


def test_resnet18_layout_on_cifar_images_keeps_no_more_than_exact():
    """torchvision's ResNet-18 layout and widths, 3x32x32 inputs, 16 channel probes: the stages at
    4x4 and below cannot save memory; they fall back and the model keeps at most the exact bytes
    (before: 1.47x). Their weight gradients are the exact model's, bit for bit (every input
    gradient upstream of them is exact too)."""
    torch.manual_seed(0)
    exact = TinyResNet(widths=(64, 128, 256, 512)).train()
    converted = xconv.convert(copy.deepcopy(exact), probes=16, probe="channel")
    x = torch.randn(8, 3, 32, 32)

    def kept_and_gradients(model):
        model.zero_grad()
        with SavedTensorMeter(model) as meter:
            out = model(x)
        kept = kept_bytes(out, parameters=model.parameters())
        out.logsumexp(1).sum().backward()
        return kept, meter, {name: p.grad for name, p in model.named_parameters()}

    exact_kept, exact_meter, exact_grads = kept_and_gradients(exact)
    kept, meter, grads = kept_and_gradients(converted)
    with force_sketch():  # what XConv kept before the rule
        forced_kept, _, _ = kept_and_gradients(copy.deepcopy(converted))
    assert kept <= exact_kept and meter.total_bytes <= exact_meter.total_bytes
    assert forced_kept > 1.4 * exact_kept  # the test sees the problem it guards against
    fell_back = {name for name, report in fallback_report(converted).items()}
    small = {name for name, layer in xconv.xconv_layers(converted)
             if not sketch_saves_memory("channel", 16, _input_shape(converted, name, x))}
    assert fell_back == small and len(small) == 13
    assert set(meter.exact_fallbacks) == small and all(calls == 1 for calls in meter.exact_fallbacks.values())
    for name in small:
        assert torch.equal(grads[f"{name}.weight"], exact_grads[f"{name}.weight"]), name


def _input_shape(model: nn.Module, name: str, x: torch.Tensor) -> tuple[int, ...]:
    """``(C_in, *spatial)`` of the input of module ``name`` of ``model`` at ``x``."""
    shapes = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape[1:]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return tuple(shapes[0])
