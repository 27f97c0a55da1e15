"""Gradient checkpointing (xconv.checkpoint, xconv.segments): modes, segments, exactness, BatchNorm, RNG,
memory, on torch-only models. The models of torchvision, smp and the harness:
tests/harness/test_checkpoint_models.py."""
import contextlib
import copy
import pickle

import pytest
import torch
import torch.nn as nn

import xconv
import xconv.checkpoint as ckpt
import xconv.segments as segments
from xconv.memory import SavedTensorMeter
from xconv.planner import activation_bytes

from tiny_models import ConditionedNet, tiny_resnet18


# Modes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("none", ckpt.CheckpointMode("none")), (None, ckpt.CheckpointMode("none")),
    ("sqrt", ckpt.CheckpointMode("sqrt")), ("every:4", ckpt.CheckpointMode("every", every=4)),
    ("budget:200MiB", ckpt.CheckpointMode("budget", budget_bytes=200 * 2**20)),
    ("budget:1GB", ckpt.CheckpointMode("budget", budget_bytes=10**9)),
    ("budget:1.5KiB", ckpt.CheckpointMode("budget", budget_bytes=1536)),
    ("budget:5000", ckpt.CheckpointMode("budget", budget_bytes=5000)),
])
def test_parse_checkpoint_mode(text, expected):
    assert xconv.parse_checkpoint_mode(text) == expected


@pytest.mark.parametrize("value", ["every:0", "every:x", "every", "budget:", "budget:-5", "budget:12XB",
                                   "budget:0", "sqrtt", 5, "every:2.5"])
def test_bad_checkpoint_modes_name_key_value_and_forms(value):
    with pytest.raises(ValueError) as error:
        xconv.parse_checkpoint_mode(value)
    message = str(error.value)
    assert message.startswith(f"checkpoint={value!r}: ")
    assert "every:K" in message and "budget:<bytes>" in message and "sqrt" in message


# Structure -----------------------------------------------------------------------------------------

def test_parts_of_a_resnet_and_of_blocks_called_with_several_arguments():
    parts = xconv.checkpoint.find_sequential_parts(tiny_resnet18())
    assert [(p.name, p.chain, len(p.units)) for p in parts] == [(f"layer{i}", True, 2) for i in range(1, 5)]
    parts = xconv.checkpoint.find_sequential_parts(ConditionedNet())
    assert [(p.name, p.chain) for p in parts] == [(f"blocks.{i}", False) for i in range(3)] + [("merge", False)]
    # Sqrt: n = 8 residual blocks -> segments of round(sqrt(8)) = 3 units, one per stage here.
    plan = xconv.checkpoint_sequential(tiny_resnet18(), "sqrt")
    assert (plan.units, plan.segment_length, len(plan.segments)) == (8, 3, 4)


def plain_stack(depth, channels=4, dropout=0.0):
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                   nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def test_sqrt_and_every_segment_lengths_on_a_root_chain():
    model = plain_stack(4)  # 16 units
    assert xconv.checkpoint_sequential(model, "sqrt").segments == tuple(
        ckpt.Segment("", start, start + 4) for start in range(0, 16, 4))
    assert [len(s) for s in xconv.checkpoint_sequential(model, "every:5").segments] == [5, 5, 5, 1]
    assert xconv.checkpoint_sequential(model, "none").segments == ()
    assert "forward" not in model.__dict__


# Exactness ----------------------------------------------------------------------------------------

def tiny_models():
    """(name, model factory, inputs, dtype) of the torch-only test models."""
    return [
        ("plain_stack", lambda: plain_stack(3, dropout=0.5), (torch.randn(2, 4, 8, 8),), torch.float64),
        ("conditioned_net", lambda: ConditionedNet(), (torch.randn(2, 1, 8, 8), torch.tensor([3, 700])),
         torch.float32),
        ("resnet18_layout", lambda: tiny_resnet18(num_classes=5), (torch.randn(2, 3, 32, 32),), torch.float64),
    ]


def training_step(model, inputs, seed=0):
    """One forward/backward from a fixed torch and XConv seed; gradients and buffers after it."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # also seeds XConv's generator
    output = model(*inputs)
    output.pow(2).mean().backward()
    return ({name: p.grad.clone() for name, p in model.named_parameters()},
            {name: b.clone() for name, b in model.named_buffers()})


def prepared(factory, dtype, probes):
    torch.manual_seed(0)
    model = factory().to(dtype).train()
    if probes:
        xconv.convert(model, probes=probes)
    return model


def assert_same_step(reference, checkpointed, dtype):
    (grads0, buffers0), (grads1, buffers1) = reference, checkpointed
    assert grads0.keys() == grads1.keys()
    tolerance = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], **tolerance, msg=name)
    for name in buffers0:  # BatchNorm running statistics and num_batches_tracked: one update per step
        torch.testing.assert_close(buffers1[name], buffers0[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("name,factory,inputs,dtype", tiny_models(), ids=[m[0] for m in tiny_models()])
@pytest.mark.parametrize("mode", ["sqrt", "every:1"])
@pytest.mark.parametrize("probes", [0, 4])
def test_gradients_buffers_and_probes_are_those_without_checkpointing(name, factory, inputs, dtype, mode, probes):
    """Exact backprop stays exact; with XConv layers, recomputation gives the very estimate XConv alone
    gives from the same seed and draws no extra seeds."""
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    reference_model = prepared(factory, dtype, probes)
    model = copy.deepcopy(reference_model)
    assert xconv.checkpoint_sequential(model, mode).segments, f"{name}: nothing to checkpoint"
    reference, after_reference = training_step(reference_model, inputs), xconv.get_rng_state()
    assert_same_step(reference, training_step(model, inputs), dtype)
    assert torch.equal(xconv.get_rng_state(), after_reference)


@pytest.fixture
def no_recompute_guard(monkeypatch):
    """Checkpointing without this module's recompute guard (buffers and XConv's RNG not restored)."""
    monkeypatch.setattr(segments, "_contexts", lambda modules: (contextlib.nullcontext(), contextlib.nullcontext()))


def test_the_checks_fail_without_the_recompute_guard(no_recompute_guard):
    """Sensitivity: unguarded recomputation updates BatchNorm twice and pairs the forward's XConv seed
    with a sketch from another seed; the comparisons above see both."""
    name, factory, inputs, dtype = tiny_models()[-1]  # ResNet-18's layout
    inputs = tuple(x.to(dtype) for x in inputs)
    reference_model = prepared(factory, dtype, probes=4)
    model = copy.deepcopy(reference_model)
    xconv.checkpoint_sequential(model, "every:1")
    (grads0, buffers0), (grads1, buffers1) = training_step(reference_model, inputs), training_step(model, inputs)
    assert buffers1["layer1.0.bn1.num_batches_tracked"] == 2 and buffers0["layer1.0.bn1.num_batches_tracked"] == 1
    assert not torch.allclose(buffers1["layer1.0.bn1.running_mean"], buffers0["layer1.0.bn1.running_mean"])
    assert not torch.allclose(grads1["layer1.0.conv1.weight"], grads0["layer1.0.conv1.weight"])
    assert torch.equal(grads1["fc.weight"], grads0["fc.weight"])  # outside every segment: unaffected


def test_dropout_replays_identically():
    torch.manual_seed(0)
    reference_model = plain_stack(3, dropout=0.5).double()
    model = copy.deepcopy(reference_model)
    xconv.checkpoint_sequential(model, "every:2")
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    assert_same_step(training_step(reference_model, (x,)), training_step(model, (x,)), torch.float64)


@pytest.mark.parametrize("mode", ["every:1", "every:2", "sqrt"])
def test_a_segment_never_opens_with_a_unit_that_overwrites_its_input(mode):
    """EfficientNet's head, Dropout(inplace=True) then Linear: a segment starting at the dropout would
    overwrite the input checkpointing keeps (autograd raises at backward); it starts after it instead."""
    torch.manual_seed(0)
    reference_model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.3, inplace=True), nn.Linear(6, 6),
                                    nn.ReLU(inplace=True), nn.Linear(6, 6), nn.Dropout(0.2, inplace=True),
                                    nn.Linear(6, 2)).double()
    model = copy.deepcopy(reference_model)
    xconv.checkpoint_sequential(model, mode)
    x = torch.randn(5, 6, dtype=torch.float64)
    assert_same_step(training_step(reference_model, (x,)), training_step(model, (x,)), torch.float64)


# state_dict, copies, evaluation --------------------------------------------------------------------

def test_state_dict_keys_unchanged_and_round_trip():
    plain = tiny_resnet18(num_classes=5)
    model = copy.deepcopy(plain)
    xconv.checkpoint_sequential(model, "sqrt")
    assert list(model.state_dict()) == list(plain.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    plain.load_state_dict(model.state_dict())
    model.load_state_dict(tiny_resnet18(num_classes=5).state_dict())
    restored = pickle.loads(pickle.dumps(model))  # the segmented forward survives pickling and copying
    assert xconv.checkpoint_plan(restored).segments == xconv.checkpoint_plan(model).segments
    assert restored.layer1.forward.owner is restored.layer1
    assert copy.deepcopy(model).layer2.forward.owner is not model.layer2


def test_evaluation_runs_the_plain_forward_and_uncheckpoint_removes_everything():
    torch.manual_seed(0)
    model = plain_stack(4).eval()
    x = torch.randn(2, 4, 8, 8)
    expected = model(x)
    xconv.checkpoint_sequential(model, "every:3")
    with torch.no_grad(), SavedTensorMeter() as meter:
        assert torch.equal(model(x), expected)
    assert meter.total_bytes == 0
    xconv.uncheckpoint(model)
    assert "forward" not in model.__dict__ and xconv.checkpoint_plan(model) is None


# Memory --------------------------------------------------------------------------------------------

def test_checkpointed_chain_keeps_only_segment_inputs():
    depth, x = 9, torch.randn(2, 4, 8, 8, requires_grad=True)
    model = plain_stack(depth)  # 36 units: sqrt -> segments of 6 units, 6 segments
    with SavedTensorMeter() as exact:
        model(x)
    plan = xconv.checkpoint_sequential(model, "sqrt")
    with SavedTensorMeter() as meter:
        y = model(x)
    y.sum().backward()
    assert len(plan.segments) == 6
    assert meter.total_bytes == len(plan.segments) * x.numel() * 4  # one input per segment, nothing else
    assert meter.bytes_by_kind == {"CheckpointSegment": meter.total_bytes}
    assert exact.total_bytes > 3 * meter.total_bytes


def _conv_chain(blocks: int) -> nn.Sequential:
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()]
    for _ in range(blocks):
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("blocks", [1, 2])
def test_sqrt_with_an_example_input_declines_a_plan_that_would_not_keep_less(blocks):
    """Short chains: sqrt's kept segment inputs plus its largest recomputation equal what the plain chain keeps
    (measured above: 38912 = 22528 + 16384 at one block), so with an example input no segment is installed."""
    x = torch.randn(2, 3, 16, 16)
    plain_bytes = activation_bytes(_conv_chain(blocks), x)["saved"]
    model = _conv_chain(blocks)
    plan = xconv.checkpoint_sequential(model, "sqrt", example_input=x)
    assert plan.segments == () and xconv.checkpoint_plan(model) is plan
    assert plan.declined.startswith("sqrt would keep") and str(plain_bytes) in plan.declined
    assert plan.summary()["declined"] == plan.declined and plan.summary()["segments"] == 0
    assert activation_bytes(model, x)["peak"] == plain_bytes
    # without an example input the same plan is installed as asked
    assert xconv.checkpoint_sequential(_conv_chain(blocks), "sqrt").segments


def test_sqrt_with_an_example_input_keeps_a_plan_that_saves_and_records_its_recomputation():
    x = torch.randn(2, 3, 16, 16)
    plain_bytes = activation_bytes(_conv_chain(8), x)["saved"]
    model = _conv_chain(8)
    plan = xconv.checkpoint_sequential(model, "sqrt", example_input=x)
    assert plan.segments and plan.declined is None and "declined" not in plan.summary()
    measured = activation_bytes(model, x)
    assert plan.recompute_bytes == measured["recompute"] > 0
    assert measured["peak"] < plain_bytes
