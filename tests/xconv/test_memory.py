"""Bytes kept for backward: the sketch instead of the input, one bit per ReLU element.

Every figure is counted twice, independently: by the saved-tensor hooks
(``SavedTensorMeter``) and by walking the autograd graph (``kept_bytes``), which also
sees tensors a Function keeps as ctx attributes; both must equal the formula.
"""
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import xconv
from xconv.memory import SavedTensorMeter, kept_bytes, kept_tensors

B, C_IN, H, W, R = 8, 16, 12, 10, 4
# Numbers a layer keeps per sample: r x C_in for channel probes, r for probes over the whole input.
NUMBERS_PER_SAMPLE = {"channel": R * C_IN, "gaussian": R, "rademacher": R, "orthogonal": R}


def kept_by_hooks_and_graph(module, x) -> tuple[int, int]:
    """Bytes ``module`` keeps for backward at (a copy of) ``x``: the hooks' count, and the graph
    walk's on a second forward without the hooks, so neither count depends on the other."""
    with SavedTensorMeter(module) as meter:
        module(x.clone())
    out = module(x.clone())
    return meter.total_bytes, kept_bytes(out, parameters=module.parameters())


def assert_both_counts(module, x, expected_bytes: int):
    hooks, graph = kept_by_hooks_and_graph(module, x)
    assert hooks == expected_bytes, f"saved-tensor hooks: {hooks} bytes, expected {expected_bytes}"
    assert graph == expected_bytes, (f"graph walk: {graph} bytes, expected {expected_bytes}: "
                                     f"{kept_tensors(module(x.clone()), parameters=module.parameters())}")


@pytest.mark.parametrize("probe", xconv.PROBE_KINDS)
def test_xconv_layer_keeps_the_sketch_not_its_input(probe):
    x = torch.randn(B, C_IN, H, W, requires_grad=True)
    assert_both_counts(nn.Conv2d(C_IN, 8, 3, padding=1), x, x.numel() * 4)  # exact: the input
    layer = xconv.XConv2d(C_IN, 8, 3, padding=1, probes=R, probe=probe)
    assert_both_counts(layer, x, B * NUMBERS_PER_SAMPLE[probe] * 4)
    with SavedTensorMeter() as meter:
        layer(x)
    assert meter.bytes_by_kind == {"XConv2d": B * NUMBERS_PER_SAMPLE[probe] * 4}


LAYERS = {  # name: (layer, input shape); C_IN input channels each
    "1d": (lambda **kw: xconv.XConv1d(C_IN, 8, 3, padding=1, **kw), (B, C_IN, 20)),
    "2d_reflect": (lambda **kw: xconv.XConv2d(C_IN, 8, 3, padding=2, padding_mode="reflect", **kw),
                   (B, C_IN, H, W)),
    "2d_same_even_kernel": (lambda **kw: xconv.XConv2d(C_IN, 8, 4, padding="same", dilation=1, **kw),
                            (B, C_IN, H, W)),
    "2d_groups_strided": (lambda **kw: xconv.XConv2d(C_IN, 8, 3, stride=2, groups=4, **kw), (B, C_IN, H, W)),
    "3d_circular": (lambda **kw: xconv.XConv3d(C_IN, 4, 3, padding=1, padding_mode="circular", **kw),
                    (B, C_IN, 4, 5, 6)),
    "transpose1d": (lambda **kw: xconv.XConvTranspose1d(C_IN, 8, 3, stride=2, **kw), (B, C_IN, 9)),
    "transpose2d": (lambda **kw: xconv.XConvTranspose2d(C_IN, 8, 3, stride=2, output_padding=1, **kw),
                    (B, C_IN, 5, 6)),
    "transpose3d": (lambda **kw: xconv.XConvTranspose3d(C_IN, 4, 2, groups=2, **kw), (B, C_IN, 3, 4, 5)),
    "2d_unbatched": (lambda **kw: xconv.XConv2d(C_IN, 8, 3, padding=1, **kw), (C_IN, H, W)),
    "transpose3d_unbatched": (lambda **kw: xconv.XConvTranspose3d(C_IN, 4, 3, **kw), (C_IN, 3, 4, 5)),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@pytest.mark.parametrize("probe", ["channel", "gaussian"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_every_layer_kind_keeps_r_numbers_per_probe_unit_and_sample(name, probe):
    """channel probes: r x B x C_in numbers; probes over the whole input: r x B (B = 1 unbatched)."""
    make, shape = LAYERS[name]
    x = torch.randn(shape, requires_grad=True)
    batch = 1 if name.endswith("_unbatched") else shape[0]
    assert_both_counts(make(probes=R, probe=probe), x, batch * NUMBERS_PER_SAMPLE[probe] * 4)


@pytest.mark.parametrize("module", [xconv.BitReLU(), xconv.BitLeakyReLU(0.1), xconv.BitReLU(inplace=True)])
def test_bit_activation_keeps_one_bit_per_element(module):
    x = torch.randn(B, C_IN, H, W + 1, requires_grad=True)  # numel not a multiple of 8 * 8
    assert_both_counts(module, x, math.ceil(x.numel() / 8))
    assert_both_counts(nn.ReLU(), x, x.numel() * 4)


def test_meter_counts_a_storage_once_and_groups_by_module_kind():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3))
    x = torch.randn(2, 3, 10, 10)
    with SavedTensorMeter() as meter:
        model(x)
    # conv1 saves x; BN saves its input (+ small statistics); ReLU saves its output,
    # which conv2 saves again (same storage, counted once).
    relu_output = 2 * 4 * 8 * 8 * 4
    assert meter.bytes_by_kind["Conv2d"] == x.numel() * 4
    assert meter.bytes_by_kind["ReLU"] == relu_output
    assert meter.bytes_by_kind["BatchNorm2d"] >= relu_output
    assert meter.total_bytes == sum(meter.bytes_by_kind.values())


def test_peak_memory_sees_a_large_allocation_on_cpu():
    """Run in a fresh process: RSS growth is only visible for memory the process
    has not already made resident (freed blocks of earlier tests would hide it)."""
    code = ("import torch; from xconv.memory import PeakMemory\n"
            "with PeakMemory('cpu') as peak:\n"
            "    block = torch.ones(64, 1024, 1024)  # 256 MiB, touched\n"
            "    del block\n"
            "print(peak.source, peak.peak_bytes)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    source, peak_bytes = result.stdout.split()
    assert source == "cpu_peak_rss_growth"
    assert int(peak_bytes) >= 200 * 2**20
