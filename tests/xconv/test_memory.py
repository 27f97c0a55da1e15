"""Saved-for-backward bytes: the sketch instead of the input, one bit per ReLU element."""
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import xconv
from xconv.memory import SavedTensorMeter, saved_bytes

B, C_IN, H, W, R = 8, 16, 12, 10, 4


@pytest.mark.parametrize("probe,kept_numbers", [("channel", R * B * C_IN), ("gaussian", B * R),
                                                ("rademacher", B * R), ("orthogonal", B * R)])
def test_xconv_layer_saves_the_sketch_not_its_input(probe, kept_numbers):
    x = torch.randn(B, C_IN, H, W, requires_grad=True)
    exact = saved_bytes(nn.Conv2d(C_IN, 8, 3, padding=1), x)
    sketched = saved_bytes(xconv.XConv2d(C_IN, 8, 3, padding=1, probes=R, probe=probe), x)
    assert exact.total_bytes == B * C_IN * H * W * 4  # the input (the weight is a parameter)
    assert sketched.total_bytes == kept_numbers * 4
    assert sketched.bytes_by_kind == {"XConv2d": kept_numbers * 4}


@pytest.mark.parametrize("module", [xconv.BitReLU(), xconv.BitLeakyReLU(0.1), xconv.BitReLU(inplace=True)])
def test_bit_activation_saves_one_bit_per_element(module):
    x = torch.randn(B, C_IN, H, W + 1, requires_grad=True)  # numel not a multiple of 8 * 8
    meter = saved_bytes(module, x.clone())
    assert meter.total_bytes == math.ceil(x.numel() / 8)
    plain = saved_bytes(nn.ReLU(), x)
    assert plain.total_bytes == x.numel() * 4


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
