"""Memory-budget planner: checkpoint segments and per-layer XConv probe counts that fit a byte budget.

Activation memory of a plan (what the budget bounds) = the bytes autograd keeps
after the forward pass (each storage once, parameters excluded: what
:class:`xconv.memory.SavedTensorMeter` counts) + the largest recomputation of
one checkpointed segment during backward (the bytes its recomputed forward
saves beyond what is already kept).

1. Profile. For every probe level (0 = exact, then ``probe_levels``, by default
   ``P, P/4, P/16, ... >= 1`` with ``P`` the largest probe count of the model's
   XConv layers) one forward pass without side effects (BatchNorm buffers, torch's
   and XConv's generators restored) records which storages every unit (see
   :func:`xconv.segments.find_sequential_parts`) and the rest of the model save,
   and the storages of each unit's inputs and outputs. Those boundary tensors are
   the same in every pass (XConv's forward is exact), so units profiled at
   different levels combine without counting a shared tensor twice.
2. Predict and search. The bytes of a plan are the union of the rest's storages,
   the storages of units that are not checkpointed, and the inputs of the
   checkpointed segments, plus the largest segment recomputation. Exact
   gradients are preferred: first every unit stays exact and only checkpoint
   segments are chosen (for each segment length, greedily the segment that lowers
   the bytes most, until the budget is met; the plan recomputing the fewest bytes
   wins). Only if no such plan fits, XConv probes are used: the first (largest)
   level at which some plan fits, then units are put back to exact one by one,
   least memory-saving first, while the budget is still met. A layer gets
   probes only where its sketch is smaller than its input.
3. Install and measure: the forward of the planned model under
   ``SavedTensorMeter``, plus the largest segment recomputation profiled with the
   planned probes. If the measured bytes exceed the budget the search is repeated
   with a target lowered by the excess (a few times), else :class:`BudgetError`.

Imports :mod:`xconv.segments` (parts, segments, plans); :mod:`xconv.checkpoint`
(whose ``budget:<bytes>`` mode calls :func:`plan_budget`) imports this module.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .segments import (CheckpointPlan, Part, Segment, checkpoint_plan, find_sequential_parts, install_segments,
                       parse_bytes, segments_of_length, suspended, uncheckpoint, with_budget_report)
from .layers import XConvMixin, sketch_saves_memory
from .memory import _storage_key, metered_forward, no_side_effects

__all__ = ["BudgetError", "BudgetReport", "plan_budget", "default_probe_levels", "profile_units",
           "activation_bytes", "recompute_bytes"]

_MAX_ATTEMPTS = 4
_REST = -1  # group index of everything outside the units
_LEVELS_ATTRIBUTE = "_xconv_planner_probe_levels"


class BudgetError(ValueError):
    """The byte budget cannot be met by any plan the planner can make."""


def _format(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(nbytes) < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


# Profiling -----------------------------------------------------------------------------------------

def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


@dataclass
class UnitProfile:
    """One profiled forward: storages saved per unit (and by the rest), with their bytes.

    Items are ``("io", unit, "in"|"out", j)`` for unit inputs/outputs (the same in
    every pass) and ``("x", level, storage key)`` for everything else.
    """

    level: int
    unit_items: list[dict]
    rest_items: dict
    unit_inputs: list[dict]
    layer_inputs: dict[str, tuple] = field(default_factory=dict)  # XConv layer: one sample's input shape

    @property
    def total_bytes(self) -> int:
        items = dict(self.rest_items)
        for unit in self.unit_items:
            items.update(unit)
        return sum(items.values())


def profile_units(model: nn.Module, units: list[nn.Module], args: tuple, kwargs: dict | None = None,
                  level: int = 0) -> UnitProfile:
    """Run ``model(*args, **kwargs)`` once (checkpointing suspended, no side effects) and record saves."""
    kwargs = kwargs or {}
    parameter_keys = {_storage_key(p) for p in model.parameters()}
    current: list[int | None] = [None]
    packs: list[tuple[int | None, tuple, int]] = []
    boundary: dict[tuple, tuple] = {}
    keep: list[torch.Tensor] = []  # alive until the end, so no storage key is reused within the pass
    unit_input_keys: list[list[tuple]] = [[] for _ in units]
    layer_inputs: dict[str, tuple] = {}

    def name_boundary(tensor, item) -> tuple | None:
        key = _storage_key(tensor)
        if key is None:
            return None
        keep.append(tensor)
        boundary.setdefault(key, (item, tensor.untyped_storage().nbytes()))
        return key

    def before(index):
        def hook(module, args, kwargs):
            for j, tensor in enumerate(_tensors((args, kwargs))):
                key = name_boundary(tensor, ("io", index, "in", j))
                if key is not None:
                    unit_input_keys[index].append(key)
            current[0] = index
        return hook

    def after(index):
        def hook(module, args, kwargs, output):
            for j, tensor in enumerate(_tensors(output)):
                name_boundary(tensor, ("io", index, "out", j))
            current[0] = None
        return hook

    def pack(tensor):
        if isinstance(tensor, nn.Parameter):
            return tensor
        key = _storage_key(tensor)
        if key is not None and key not in parameter_keys:
            keep.append(tensor)
            packs.append((current[0], key, tensor.untyped_storage().nbytes()))
        return tensor

    handles = []
    for index, unit in enumerate(units):
        handles.append(unit.register_forward_pre_hook(before(index), with_kwargs=True))
        handles.append(unit.register_forward_hook(after(index), with_kwargs=True))
    def record_shape(name):
        def hook(module, args):
            layer_inputs.setdefault(name, module.sample_shape(args[0]))
        return hook

    for name, layer in model.named_modules():
        if isinstance(layer, XConvMixin):
            handles.append(layer.register_forward_pre_hook(record_shape(name)))
    try:
        with suspended(model), no_side_effects(model), torch.enable_grad():
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                output = model(*args, **kwargs)
            unit_items: list[dict] = [{} for _ in units]
            rest_items: dict = {}
            for unit, key, nbytes in packs:
                item = boundary[key][0] if key in boundary else ("x", level, key)
                (rest_items if unit is None else unit_items[unit])[item] = nbytes
            unit_inputs = [{boundary[key][0]: boundary[key][1] for key in keys} for keys in unit_input_keys]
            del output
            keep.clear()
    finally:
        for handle in handles:
            handle.remove()
    return UnitProfile(level, unit_items, rest_items, unit_inputs, layer_inputs)


# Prediction ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prediction:
    saved: int  # kept after the forward pass
    recompute: int  # the largest segment recomputation in backward
    recomputed: int  # sum over checkpointed segments (a proxy for the extra compute)

    @property
    def peak(self) -> int:
        return self.saved + self.recompute


class _Predictor:
    """Bytes of a plan from the profiles: which group (unit, or the rest) runs at which level."""

    def __init__(self, parts: list[Part], profiles: list[UnitProfile]):
        self.profiles = profiles
        self.unit_of = {}
        for part in parts:
            for j in range(len(part.units)):
                self.unit_of[(part.name, j)] = len(self.unit_of)

    def units(self, segment: Segment) -> list[int]:
        return [self.unit_of[(segment.part, j)] for j in range(segment.start, segment.stop)]

    def inputs(self, segment: Segment) -> dict:
        return self.profiles[0].unit_inputs[self.unit_of[(segment.part, segment.start)]]

    def group_bytes(self, group: int, level: int) -> int:
        profile = self.profiles[level]
        return sum((profile.rest_items if group == _REST else profile.unit_items[group]).values())

    def predict(self, levels: dict[int, int], checkpointed: list[Segment]) -> Prediction:
        saved = dict(self.profiles[levels[_REST]].rest_items)
        recomputed_units = set()
        for segment in checkpointed:
            recomputed_units.update(self.units(segment))
            saved.update(self.inputs(segment))
        for unit in range(len(self.unit_of)):
            if unit not in recomputed_units:
                saved.update(self.profiles[levels[unit]].unit_items[unit])
        largest = total = 0
        for segment in checkpointed:
            items = {}
            for unit in self.units(segment):
                items.update(self.profiles[levels[unit]].unit_items[unit])
            extra = sum(nbytes for item, nbytes in items.items() if item not in saved)
            largest, total = max(largest, extra), total + extra
        return Prediction(sum(saved.values()), largest, total)


def _greedy(predictor: _Predictor, levels: dict, segments: list[Segment], target: int):
    """Checkpoint, one at a time, the segment giving the fewest bytes, until ``target`` is met.

    A single checkpoint may not lower the bytes at all (its recomputation costs
    what it saves); several share the one largest recomputation. So the walk goes
    on through steps that do not help, and returns the first plan meeting
    ``target``, else the smallest one seen.
    """
    chosen: list[Segment] = []
    current = predictor.predict(levels, chosen)
    best = (current, [])
    remaining = list(segments)
    while current.peak > target and remaining:
        trials = [(predictor.predict(levels, chosen + [s]), i) for i, s in enumerate(remaining)]
        current, index = min(trials, key=lambda trial: (trial[0].peak, trial[0].recomputed))
        chosen.append(remaining.pop(index))
        if current.peak < best[0].peak or current.peak <= target:
            best = (current, list(chosen))
    return best[1], best[0]


def _search(predictor: _Predictor, parts: list[Part], levels: dict, target: int):
    """Best plan over segment lengths: fits ``target`` and recomputes the least; else the smallest."""
    longest = max((len(part.units) for part in parts if part.chain), default=1)
    fitting, smallest = None, None
    for length in range(1, longest + 1):
        chosen, prediction = _greedy(predictor, levels, segments_of_length(parts, length), target)
        candidate = (prediction, length, chosen)
        if smallest is None or prediction.peak < smallest[0].peak:
            smallest = candidate
        if prediction.peak <= target and (fitting is None or (prediction.recomputed, prediction.peak) <
                                          (fitting[0].recomputed, fitting[0].peak)):
            fitting = candidate
    return fitting, smallest


# Levels and layers ---------------------------------------------------------------------------------

def default_probe_levels(model: nn.Module) -> list[int]:
    """``P, P/4, P/16, ... >= 1`` for the largest probe count ``P`` of the model's XConv layers ([] if none)."""
    largest = max((layer.probes for layer in model.modules() if isinstance(layer, XConvMixin)), default=0)
    levels = []
    while largest >= 1:
        levels.append(largest)
        largest //= 4
    return levels


def _layer_groups(model: nn.Module, units: list[nn.Module]) -> dict[str, tuple[nn.Module, int]]:
    """XConv layer name -> (layer, index of the unit containing it or _REST)."""
    owner = {id(sub): index for index, unit in enumerate(units) for sub in unit.modules()}
    return {name: (layer, owner.get(id(layer), _REST))
            for name, layer in model.named_modules() if isinstance(layer, XConvMixin)}


def _layer_probes(layers: dict, levels: dict, probe_counts: list[int], shapes: dict) -> dict[str, int]:
    """Probe count of each XConv layer: its group's level, where the sketch is smaller than the input."""
    probes = {}
    for name, (layer, group) in layers.items():
        count = probe_counts[levels[group]]
        shape = shapes.get(name)
        saves = shape is not None and sketch_saves_memory(layer.probe, count, shape)
        probes[name] = count if count and saves else 0
    return probes


def _apply_probes(layers: dict, probes: dict[str, int]) -> None:
    for name, (layer, _) in layers.items():
        layer.set_xconv(probes=probes[name], probe=layer.probe)


# Planning ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetReport:
    """What the planner chose and how the predicted bytes compare with the measured ones."""

    budget: int
    exact_bytes: int  # exact gradients, nothing checkpointed (profiled)
    predicted_saved: int
    predicted_recompute: int
    measured_saved: int  # SavedTensorMeter over the planned forward
    measured_recompute: int  # largest segment recomputation, profiled with the planned probes
    segments: tuple[Segment, ...]
    layer_probes: dict
    attempts: int
    probe_levels: tuple[int, ...] = ()  # the levels the planner could use (kept for re-planning)

    @property
    def predicted(self) -> int:
        return self.predicted_saved + self.predicted_recompute

    @property
    def measured(self) -> int:
        return self.measured_saved + self.measured_recompute

    @property
    def xconv_layers(self) -> list[str]:
        return [name for name, probes in self.layer_probes.items() if probes > 0]

    def summary(self) -> dict:
        return {"budget_bytes": self.budget, "exact_bytes": self.exact_bytes,
                "predicted_bytes": self.predicted, "predicted_saved_bytes": self.predicted_saved,
                "predicted_recompute_bytes": self.predicted_recompute,
                "measured_bytes": self.measured, "measured_saved_bytes": self.measured_saved,
                "measured_recompute_bytes": self.measured_recompute, "fits": self.measured <= self.budget,
                "segments": len(self.segments), "xconv_layers": len(self.xconv_layers),
                "layer_probes": {k: v for k, v in self.layer_probes.items() if v > 0}, "attempts": self.attempts}

    def describe(self) -> str:
        return (f"budget {_format(self.budget)}: {len(self.segments)} checkpointed segments, "
                f"{len(self.xconv_layers)}/{len(self.layer_probes)} XConv layers with probes; "
                f"predicted {_format(self.predicted)} (saved {_format(self.predicted_saved)} + recompute "
                f"{_format(self.predicted_recompute)}), measured {_format(self.measured)} (saved "
                f"{_format(self.measured_saved)} + recompute {_format(self.measured_recompute)}); "
                f"exact backprop {_format(self.exact_bytes)}")


def _choose(predictor, parts, probe_counts, target):
    """(levels, prediction, segments) of the plan for ``target``; raises BudgetError when none fits."""
    groups = [_REST] + list(range(len(predictor.unit_of)))
    smallest = None
    for level in range(len(probe_counts)):
        levels = dict.fromkeys(groups, level)
        fitting, least = _search(predictor, parts, levels, target)
        if smallest is None or least[0].peak < smallest[0].peak:
            smallest = least
        if fitting is None:
            continue
        if level > 0:  # back to exact where the budget allows, the least useful XConv groups first
            gains = sorted(groups, key=lambda g: predictor.group_bytes(g, 0) - predictor.group_bytes(g, level))
            for group in gains:
                trial = {**levels, group: 0}
                better, _ = _search(predictor, parts, trial, target)
                if better is not None:
                    levels, fitting = trial, better
        return levels, fitting[0], fitting[2]
    raise BudgetError(smallest[0].peak)


def recompute_bytes(model: nn.Module, args: tuple, kwargs: dict | None = None) -> int:
    """Bytes the largest recomputation of a checkpointed segment of ``model`` saves beyond what the
    forward kept (profiled with the probes in force; 0 without checkpointing). No side effects."""
    plan = checkpoint_plan(model)
    if plan is None or not plan.segments:
        return 0
    parts = find_sequential_parts(model)
    units = [module for part in parts for _, module in part.units]
    predictor = _Predictor(parts, [profile_units(model, units, tuple(args), kwargs)])
    return predictor.predict(dict.fromkeys([_REST] + list(range(len(units))), 0), list(plan.segments)).recompute


def activation_bytes(model: nn.Module, *args, **kwargs) -> dict:
    """Measured activation memory of ``model`` as installed (checkpointing and probes in force).

    ``saved``: SavedTensorMeter over one forward; ``recompute``: the largest
    recomputation of a checkpointed segment (:func:`recompute_bytes`);
    ``peak = saved + recompute``. No side effects on buffers or generators.
    """
    meter = metered_forward(model, *args, **kwargs)
    recompute = recompute_bytes(model, args, kwargs)
    return {"saved": meter.total_bytes, "recompute": recompute, "peak": meter.total_bytes + recompute,
            "saved_by_kind": dict(meter.bytes_by_kind)}


def plan_budget(model: nn.Module, budget, *example_inputs, example_kwargs: dict | None = None,
                probe_levels: list[int] | None = None) -> CheckpointPlan:
    """Choose and install checkpoint segments and per-layer probe counts so activations fit ``budget``.

    Args:
        budget: bytes (int) or a string such as ``"200MiB"``.
        example_inputs, example_kwargs: what ``model`` is called with in training.
        probe_levels: probe counts the planner may give XConv layers, most accurate
            first; default :func:`default_probe_levels` (``[]``: exact gradients only),
            remembered by the model, so re-planning is not limited by probes a
            previous plan lowered.

    Returns the installed :class:`~xconv.segments.CheckpointPlan`; its ``budget``
    is a :class:`BudgetReport`. Raises :class:`BudgetError` if no plan fits.
    """
    budget = parse_bytes(budget, "budget") if isinstance(budget, str) else int(budget)
    if budget < 1:
        raise ValueError(f"budget={budget!r}: must be a positive number of bytes")
    kwargs = example_kwargs or {}
    if probe_levels is None:  # the first plan's levels: later plans start from probes it lowered
        probe_levels = model.__dict__.get(_LEVELS_ATTRIBUTE, default_probe_levels(model))
    uncheckpoint(model)
    parts = find_sequential_parts(model)
    units = [module for part in parts for _, module in part.units]
    layers = _layer_groups(model, units)
    original = {name: layer.probes for name, (layer, _) in layers.items()}
    probe_counts = [0] + list(probe_levels)
    if any(not isinstance(p, int) or p < 1 for p in probe_counts[1:]):
        raise ValueError(f"probe_levels={probe_levels!r}: must be integers >= 1, most accurate first")
    if len(probe_counts) > 1 and not layers:
        probe_counts = [0]  # no XConv layers: checkpointing only
    model.__dict__[_LEVELS_ATTRIBUTE] = probe_counts[1:]

    profiles = []
    for level in range(len(probe_counts)):
        shapes = profiles[0].layer_inputs if profiles else {}
        _apply_probes(layers, _layer_probes(layers, dict.fromkeys([_REST] + list(range(len(units))), level),
                                            probe_counts, shapes) if level else dict.fromkeys(layers, 0))
        profiles.append(profile_units(model, units, example_inputs, kwargs, level))
    predictor = _Predictor(parts, profiles)
    exact = profiles[0].total_bytes
    target = budget
    try:
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                levels, prediction, segments = _choose(predictor, parts, probe_counts, target)
            except BudgetError as error:
                smallest = error.args[0]
                raise BudgetError(
                    f"checkpoint=budget:{budget} ({_format(budget)}) cannot be met: the smallest activation "
                    f"memory the planner reaches is about {_format(smallest)} (with the best checkpoint segments"
                    f"{f', XConv layers at {probe_counts[-1]} probes' if len(probe_counts) > 1 else ''}); exact "
                    f"backprop needs {_format(exact)}. Allowed: a budget of at least {smallest} bytes"
                    f"{'' if len(probe_counts) > 1 else ' (or XConv layers, probes > 0, which the planner may use)'}"
                ) from None
            probes = _layer_probes(layers, levels, probe_counts, profiles[0].layer_inputs)
            _apply_probes(layers, probes)
            order = {part.name: index for index, part in enumerate(parts)}
            segments = sorted(segments, key=lambda s: (order[s.part], s.start))
            plan = CheckpointPlan(f"budget:{budget}", len(units), None, tuple(segments))
            install_segments(model, plan.segments, plan)
            measured = activation_bytes(model, *example_inputs, **kwargs)
            report = BudgetReport(budget, exact, prediction.saved, prediction.recompute, measured["saved"],
                                  measured["recompute"], tuple(segments), probes, attempt,
                                  tuple(probe_counts[1:]))
            if report.measured <= budget:
                plan = with_budget_report(plan, report)
                install_segments(model, plan.segments, plan)
                return plan
            target -= report.measured - budget
        raise BudgetError(f"checkpoint=budget:{budget} ({_format(budget)}): measured {_format(report.measured)} "
                          f"after {_MAX_ATTEMPTS} plans (predicted {_format(report.predicted)}); allowed: a "
                          f"budget of at least {report.measured} bytes")
    except BaseException:
        uncheckpoint(model)
        _apply_probes(layers, original)
        raise
