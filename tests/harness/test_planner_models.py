"""The memory-budget planner on torchvision's ResNet-18: its predictions hold on a real network.

The planner's own tests (the same budgets on ResNet-18's layout at small widths):
tests/xconv/test_planner.py.
"""
import pytest
import torch
import torchvision

import xconv
from xconv.planner import activation_bytes, plan_budget

X = torch.randn(2, 3, 64, 64)


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


@pytest.mark.parametrize("fraction,uses_xconv", [(0.8, False), (0.62, True)])
def test_budget_met_and_predicted_within_five_percent(fraction, uses_xconv):
    """0.8 of exact backprop's bytes: checkpointing alone, every layer exact; 0.62: some XConv layers."""
    budget = int(fraction * activation_bytes(resnet18(), X)["peak"])
    model = xconv.convert(resnet18(), probes=16, relu=True)
    report = plan_budget(model, budget, X).budget
    assert report.measured <= budget and abs(report.predicted - report.measured) <= 0.05 * report.measured
    assert activation_bytes(model, X)["peak"] == report.measured
    assert (0 < len(report.xconv_layers) < len(report.layer_probes)) if uses_xconv else report.xconv_layers == []
