"""The memory-budget planner (xconv.planner): meets a budget on ResNet-18's layout (at small widths),
prefers exact layers, errors clearly. Real networks: tests/harness/test_planner_models.py."""
import copy

import pytest
import torch

import xconv
from xconv.memory import SavedTensorMeter
from xconv.planner import BudgetError, activation_bytes, plan_budget

from tiny_models import tiny_resnet18

X = torch.randn(2, 3, 64, 64)


def resnet18(probes=0, relu=False):
    torch.manual_seed(0)
    model = tiny_resnet18(num_classes=10)
    if probes or relu:
        xconv.convert(model, probes=probes, relu=relu)
    return model


@pytest.fixture(scope="module")
def exact_bytes():
    return activation_bytes(resnet18(), X)["peak"]


def test_budget_met_with_exact_gradients_by_checkpointing_alone(exact_bytes):
    model = resnet18(probes=16)  # XConv layers available, but checkpointing suffices: all stay exact
    budget = int(0.8 * exact_bytes)
    plan = plan_budget(model, budget, X)
    report = plan.budget
    assert report.exact_bytes == exact_bytes
    assert plan.segments and report.xconv_layers == []
    assert all(layer.probes == 0 for _, layer in xconv.xconv_layers(model))
    assert report.measured <= budget
    # The report's measurement is the meter's: check it independently.
    with SavedTensorMeter() as meter:
        model(X)
    assert meter.total_bytes == report.measured_saved
    assert activation_bytes(model, X)["peak"] == report.measured
    assert abs(report.predicted - report.measured) <= 0.05 * report.measured


def test_budget_below_checkpointing_alone_uses_xconv_where_needed(exact_bytes):
    model = resnet18(probes=16, relu=True)
    with pytest.raises(BudgetError):  # exact gradients only: not reachable
        plan_budget(copy.deepcopy(model), int(0.62 * exact_bytes), X, probe_levels=[])
    plan = plan_budget(model, int(0.62 * exact_bytes), X)
    report = plan.budget
    assert report.measured <= report.budget
    xconv_layers = report.xconv_layers
    assert 0 < len(xconv_layers) < len(report.layer_probes)  # exact wherever the budget allows
    assert {name for name, layer in xconv.xconv_layers(model) if layer.probes > 0} == set(xconv_layers)
    loss = model(X).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_planned_checkpointing_keeps_gradients_exact(exact_bytes):
    reference, model = resnet18().double(), resnet18().double()
    x = X.double()
    plan_budget(model, int(0.8 * exact_bytes) * 2, x)  # float64: twice the bytes
    for m in (reference, model):
        torch.manual_seed(1)
        m(x).pow(2).mean().backward()
    for (name, p), q in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-14, msg=name)


def test_impossible_budget_errors_and_leaves_the_model_alone(exact_bytes):
    model = resnet18(probes=16)
    with pytest.raises(BudgetError) as error:
        plan_budget(model, "100KiB", X)
    message = str(error.value)
    assert message.startswith("checkpoint=budget:102400 (100.00 KiB) cannot be met")
    assert "Allowed: a budget of at least" in message and "exact backprop needs" in message
    assert xconv.checkpoint_plan(model) is None and "forward" not in model.layer1.__dict__
    assert all(layer.probes == 16 for _, layer in xconv.xconv_layers(model))


def test_budget_mode_plans_at_the_first_training_call(exact_bytes):
    model = resnet18()
    plan = xconv.checkpoint_sequential(model, f"budget:{int(0.8 * exact_bytes)}")
    assert plan.pending and not plan.segments
    with torch.no_grad():
        model.eval()(X)  # evaluation does not plan
    assert xconv.checkpoint_plan(model).pending
    model.train()(X).sum().backward()
    planned = xconv.checkpoint_plan(model)
    assert not planned.pending and planned.segments and planned.budget.measured <= planned.budget.budget
    assert planned.recompute_bytes == planned.budget.measured_recompute > 0
