"""Gradient checkpointing (Chen et al. 2016, arXiv 1604.06174) of a model's sequential parts.

A checkpointed *segment* keeps only its inputs for backward; backward runs its
forward again (recomputation). With ``n`` units cut into segments of ``sqrt(n)``
units, activation memory grows like ``sqrt(n)`` for one extra forward pass.
Which parts can be segmented, how a segment is run again and what stays exact
(``state_dict``, BatchNorm statistics, random numbers): :mod:`xconv.segments`.

Modes (:func:`parse_checkpoint_mode`): ``none``; ``sqrt`` (segments of
``round(sqrt(n))`` consecutive units, ``n`` = units of the whole model);
``every:K`` (segments of ``K`` units); ``budget:<bytes>`` (segments and
per-layer XConv probe counts chosen by :mod:`xconv.planner` to fit the budget).

Imports go one way: :mod:`xconv.segments` <- :mod:`xconv.planner` <- this
module. The names of :mod:`xconv.segments` are importable from here as well.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from .memory import metered_forward
from .planner import activation_bytes, plan_budget, recompute_bytes
# The segment names are re-exported: xconv.checkpoint.find_sequential_parts etc. keep working.
from .segments import (CHECKPOINT_FORMS, CheckpointMode, CheckpointPlan, CheckpointSegment, InstalledForward, Part,
                       Segment, checkpoint_plan, find_sequential_parts, install_segments, parse_bytes,
                       parse_checkpoint_mode, record_plan, segments_of_length, sqrt_segment_length, suspended,
                       uncheckpoint, with_budget_report)
from .segments import _CheckpointedBlock, _SegmentedSequential  # noqa: F401  (models pickled before the split)

__all__ = ["CheckpointMode", "CheckpointPlan", "Part", "Segment", "parse_checkpoint_mode", "parse_bytes",
           "find_sequential_parts", "segments_of_length", "checkpoint_sequential", "uncheckpoint",
           "checkpoint_plan", "install_segments", "CHECKPOINT_FORMS"]


class _PlanOnFirstCall(InstalledForward):
    """Root ``forward`` in budget mode without an example input: plan on the first training call."""

    def __init__(self, owner: nn.Module, budget: int, planner_options: dict):
        self.owner, self.budget, self.planner_options = owner, budget, planner_options

    def __call__(self, *args, **kwargs):
        owner = self.owner
        if torch.is_grad_enabled() and owner.training:
            del owner.__dict__["forward"]
            plan_budget(owner, self.budget, *args, example_kwargs=kwargs, **self.planner_options)
            return owner.forward(*args, **kwargs)
        return type(owner).forward(owner, *args, **kwargs)


class _MeasureRecomputeOnFirstCall:
    """Root forward pre-hook: at the first training call, profile the largest segment recomputation
    into the plan, then remove itself (a class, not a closure, so the model still pickles)."""

    def __init__(self, model: nn.Module):
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        if not (torch.is_grad_enabled() and module.training):
            return None
        self.handle.remove()
        plan = checkpoint_plan(module)
        if plan is not None and plan.segments and plan.recompute_bytes is None:
            record_plan(module, replace(plan, recompute_bytes=recompute_bytes(module, args, kwargs)))
        return None


def checkpoint_sequential(model: nn.Module, mode="sqrt", *, example_input=None,
                          example_kwargs: dict | None = None, measure_recompute: bool = False,
                          **planner_options) -> CheckpointPlan:
    """Checkpoint the sequential parts of ``model`` in place; returns the plan.

    Args:
        mode: ``"none"``, ``"sqrt"``, ``"every:K"``, ``"budget:<bytes>"`` (or a
            :class:`CheckpointMode`).
        example_input: an input (or tuple of inputs) of the model. Budget mode: plan
            with it now (without it the plan is made at the first forward call in
            training mode with gradients enabled, on that call's inputs). sqrt/every
            mode: measure the plan on it and decline it (install no segment; the
            plan's ``declined`` says why) when its peak, kept bytes plus the largest
            segment recomputation, would not be below what the model keeps without
            checkpointing: checkpointing never costs more memory than it saves.
        measure_recompute: sqrt/every mode: at the first training call, profile the
            bytes the largest segment recomputation saves in backward into the plan's
            ``recompute_bytes`` (one extra forward; the budget planner always measures it).
        planner_options: budget mode only, passed to :func:`xconv.planner.plan_budget`
            (e.g. ``probe_levels``).

    ``xconv.checkpoint_plan(model)`` returns the plan in force later;
    :func:`uncheckpoint` undoes it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"checkpoint_sequential expects a torch.nn.Module, got {type(model).__name__}")
    parsed = parse_checkpoint_mode(mode)
    if planner_options and parsed.kind != "budget":
        raise TypeError(f"planner options {sorted(planner_options)} apply to budget:<bytes> mode only, "
                        f"got checkpoint={parsed}")
    uncheckpoint(model)
    parts = find_sequential_parts(model)
    units = sum(len(part.units) for part in parts)
    if parsed.kind == "none":
        return CheckpointPlan("none", units, None, ())
    if parsed.kind == "budget":
        if example_input is None:
            plan = CheckpointPlan(str(parsed), units, None, (), pending=True)
            model.forward = _PlanOnFirstCall(model, parsed.budget_bytes, planner_options)
            record_plan(model, plan)
            return plan
        inputs = example_input if isinstance(example_input, tuple) else (example_input,)
        plan_budget(model, parsed.budget_bytes, *inputs, example_kwargs=example_kwargs, **planner_options)
        return checkpoint_plan(model)
    length = sqrt_segment_length(parts) if parsed.kind == "sqrt" else parsed.every
    plan = CheckpointPlan(str(parsed), units, length, tuple(segments_of_length(parts, length)))
    install_segments(model, plan.segments, plan)
    if example_input is not None and plan.segments:
        return _unless_it_keeps_more(model, plan, example_input, example_kwargs or {})
    if measure_recompute and plan.segments:
        _MeasureRecomputeOnFirstCall(model)
    return plan


def _unless_it_keeps_more(model: nn.Module, plan: CheckpointPlan, example_input, kwargs: dict) -> CheckpointPlan:
    """``plan`` (installed) with its measured recomputation, or no segments if its peak (kept +
    largest recomputation) on ``example_input`` is not below the bytes the model keeps without it."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    checkpointed = activation_bytes(model, *inputs, **kwargs)
    with suspended(model):  # no segments, so nothing recomputed: the kept bytes alone
        plain = metered_forward(model, *inputs, **kwargs).total_bytes
    if checkpointed["peak"] < plain:
        plan = replace(plan, recompute_bytes=checkpointed["recompute"])
        record_plan(model, plan)
        return plan
    uncheckpoint(model)
    plan = replace(plan, segments=(), recompute_bytes=0,
                   declined=f"{plan.mode} would keep {checkpointed['saved']} B and recompute {checkpointed['recompute']} B, "
                            f"not less than the {plain} B kept without checkpointing")
    record_plan(model, plan)
    return plan
