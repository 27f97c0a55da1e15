"""Checkpoint segments: the sequential parts of a model, and running parts of them again in backward.

Beneath :mod:`xconv.checkpoint` (the ``checkpoint_sequential`` modes) and
:mod:`xconv.planner` (the budget mode); imports neither.

A checkpointed *segment* keeps only its inputs for backward; backward runs its
forward again (recomputation) through ``torch.utils.checkpoint`` in its
non-reentrant form.

What can be segmented (:func:`find_sequential_parts`), walking down from the root
and stopping at the first of these on each branch:

* a *chain*: an ``nn.Sequential`` (or a subclass keeping Sequential's forward).
  Its children are its units; consecutive units form segments. Examples:
  torchvision ResNet ``layer1..4`` (units: the residual blocks), the task
  models' ``features`` stacks, DIP's ``down``/``up`` stacks.
* a *block*: a module with a forward of its own that contains no other module
  with a forward of its own and parameters (a residual block, an attention
  block, smp's U-Net decoder blocks). One unit, checkpointed on its own.

Modes (:func:`parse_checkpoint_mode`): ``none``; ``sqrt``; ``every:K``;
``budget:<bytes>`` (see :func:`xconv.checkpoint.checkpoint_sequential`).

Kept exact:

* ``state_dict``: nothing is added or renamed. A segmented part gets an
  instance attribute ``forward`` (an :class:`InstalledForward`;
  :func:`uncheckpoint` removes it); modules, Parameters and buffers are untouched.
* BatchNorm running statistics are updated once per step: recomputation
  restores every buffer of the segment afterwards.
* Random numbers: torch's generators (dropout) are replayed by
  ``torch.utils.checkpoint``; XConv's own generator is rewound to its state at
  the segment's forward, so recomputed XConv layers draw the same seeds. This
  is needed for correctness, not only reproducibility: backward pairs the seed
  kept by the forward with the recomputed sketch.
* Without gradients (evaluation) a segmented part runs its plain forward.
"""
from __future__ import annotations

import contextlib
import functools
import math
import re
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.utils.checkpoint as torch_checkpoint

from . import rng

__all__ = ["CheckpointMode", "CheckpointPlan", "Part", "Segment", "parse_checkpoint_mode", "parse_bytes",
           "find_sequential_parts", "segments_of_length", "sqrt_segment_length", "uncheckpoint",
           "checkpoint_plan", "record_plan", "install_segments", "suspended", "with_budget_report",
           "InstalledForward", "CheckpointSegment", "CHECKPOINT_FORMS"]

CHECKPOINT_FORMS = "none, sqrt, every:K (K an integer >= 1), budget:<bytes> (e.g. budget:200MiB, budget:1.5GB)"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
_PLAN_ATTRIBUTE = "_xconv_checkpoint_plan"


# Modes ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointMode:
    """A parsed ``checkpoint=`` value: ``kind`` is none, sqrt, every or budget."""

    kind: str
    every: int | None = None
    budget_bytes: int | None = None

    def __str__(self) -> str:
        if self.kind == "every":
            return f"every:{self.every}"
        if self.kind == "budget":
            return f"budget:{self.budget_bytes}"
        return self.kind


def parse_bytes(text, key: str = "checkpoint") -> int:
    """``"200MiB"`` -> 209715200. Units B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB (of 1024)."""
    match = _BYTES.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{key}={text!r}: a byte count must be a number with an optional unit "
                         f"B, KB, MB, GB, TB, KiB, MiB, GiB or TiB (e.g. 200MiB)")
    count = int(float(match.group(1)) * _UNITS[unit])
    if count < 1:
        raise ValueError(f"{key}={text!r}: the byte budget must be at least 1 byte")
    return count


def parse_checkpoint_mode(value) -> CheckpointMode:
    """Parse ``none | sqrt | every:K | budget:<bytes>`` (``None`` means ``none``)."""
    if isinstance(value, CheckpointMode):
        return value
    bad = ValueError(f"checkpoint={value!r}: must be one of {CHECKPOINT_FORMS}")
    if value is None:
        return CheckpointMode("none")
    if not isinstance(value, str):
        raise bad
    text = value.strip()
    if text.lower() in ("none", "sqrt"):
        return CheckpointMode(text.lower())
    kind, colon, argument = text.partition(":")
    kind = kind.strip().lower()
    if kind == "every" and colon:
        if not argument.strip().isdigit() or int(argument) < 1:
            raise bad
        return CheckpointMode("every", every=int(argument))
    if kind == "budget" and colon:
        try:
            return CheckpointMode("budget", budget_bytes=parse_bytes(argument))
        except ValueError as error:
            raise ValueError(f"checkpoint={value!r}: {str(error).split(': ', 1)[1]}; "
                             f"allowed forms: {CHECKPOINT_FORMS}") from None
    raise bad


# Structure -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """A chain (``nn.Sequential``: its children are the units) or a block (one unit)."""

    name: str
    module: nn.Module = field(repr=False, compare=False)
    chain: bool

    @property
    def units(self) -> list[tuple[str, nn.Module]]:
        if not self.chain:
            return [(self.name, self.module)]
        return [(_join(self.name, child), module) for child, module in self.module.named_children()]


@dataclass(frozen=True)
class Segment:
    """Units ``start..stop-1`` of the part named ``part`` (a block: 0..1), recomputed in backward."""

    part: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _own_forward(module: nn.Module) -> bool:
    forward = type(module).forward
    return forward is not nn.Sequential.forward and forward is not nn.Module.forward


def _is_chain(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward and len(module) > 0


def _composite_with_forward(module: nn.Module) -> bool:
    """A module with children, a forward of its own and parameters (e.g. a residual block)."""
    return (_own_forward(module) and next(module.children(), None) is not None
            and next(module.parameters(), None) is not None)


def _is_block(module: nn.Module) -> bool:
    if not _own_forward(module) or next(module.children(), None) is None:
        return False
    return not any(_composite_with_forward(inner) for _, inner in module.named_modules() if inner is not module)


def find_sequential_parts(model: nn.Module) -> list[Part]:
    """The chains and blocks of ``model`` that checkpointing can segment, in module order."""
    parts: list[Part] = []

    def visit(name: str, module: nn.Module, root: bool) -> None:
        children = list(module.named_children())
        if not children:
            return
        if _is_chain(module) and not (len(children) == 1 and next(children[0][1].children(), None) is not None):
            parts.append(Part(name, module, chain=True))
            return
        if not root and _is_block(module):
            parts.append(Part(name, module, chain=False))
            return
        for child_name, child in children:
            visit(_join(name, child_name), child, False)

    visit("", model, True)
    return parts


def segments_of_length(parts: list[Part], length: int) -> list[Segment]:
    """Every chain cut into runs of ``length`` consecutive units; every block a segment of its own."""
    segments = []
    for part in parts:
        count = len(part.units)
        segments += [Segment(part.name, start, min(start + length, count)) for start in range(0, count, length)]
    return segments


def sqrt_segment_length(parts: list[Part]) -> int:
    """Chen et al.'s segment length: ``round(sqrt(n))`` for ``n`` units."""
    return max(1, round(math.sqrt(sum(len(part.units) for part in parts))))


# Running a segment ---------------------------------------------------------------------------------

class _RecomputeGuard:
    """Recompute context: XConv's generator as it was at the segment's forward; buffers restored after."""

    def __init__(self, modules: tuple[nn.Module, ...]):
        self.modules = modules
        self.forward_xconv_state = rng.get_rng_state()

    def __enter__(self):
        buffers = {id(b): b for module in self.modules for b in module.buffers()}
        self.buffers = list(buffers.values())
        self.kept = [b.detach().clone() for b in self.buffers]
        self.outer_xconv_state = rng.get_rng_state()
        rng.set_rng_state(self.forward_xconv_state)
        return self

    def __exit__(self, *exc) -> bool:
        with torch.no_grad():
            for buffer, kept in zip(self.buffers, self.kept):
                buffer.copy_(kept)  # BatchNorm statistics and counters: updated by the forward only
        rng.set_rng_state(self.outer_xconv_state)
        return False


def _contexts(modules: tuple[nn.Module, ...]):
    return contextlib.nullcontext(), _RecomputeGuard(modules)


def _call_flat(function, positional: int, keys: tuple[str, ...], *flat):
    return function(*flat[:positional], **dict(zip(keys, flat[positional:])))


class CheckpointSegment(nn.Module):
    """Runs ``function(*args, **kwargs)`` under non-reentrant ``torch.utils.checkpoint``.

    A parameter-free module (never registered in a model), so memory meters
    attribute the segment inputs that checkpointing keeps to ``CheckpointSegment``.
    Keyword arguments are passed positionally to checkpoint so their tensors are
    kept (and counted) like the positional ones.
    """

    def forward(self, function, modules: tuple[nn.Module, ...], *args, **kwargs):
        keys = tuple(kwargs)
        return torch_checkpoint.checkpoint(
            functools.partial(_call_flat, function, len(args), keys), *args, *kwargs.values(),
            use_reentrant=False, preserve_rng_state=True, context_fn=functools.partial(_contexts, modules))


_SEGMENT = CheckpointSegment()


def _run_units(units: tuple[nn.Module, ...], input):
    for unit in units:
        input = unit(input)
    return input


def _past_inplace_units(units: tuple[nn.Module, ...], start: int, stop: int) -> int:
    """The first unit of ``units[start:stop]`` that does not overwrite its input in place
    (``inplace=True``: ReLU, Dropout, ...). Checkpointing keeps a segment's input for the
    recomputation, so a segment must not open with a unit that overwrites it; such leading units
    run just before the segment instead (torch then keeps what they keep)."""
    while start < stop and getattr(units[start], "inplace", False):
        start += 1
    return start


class InstalledForward:
    """Base of the ``forward`` attributes installed on modules here (and by :mod:`xconv.checkpoint`);
    :func:`uncheckpoint` removes every one of them."""


class _SegmentedSequential(InstalledForward):
    """``forward`` of a chain whose ``segments`` (``(start, stop)`` pairs) are checkpointed."""

    def __init__(self, owner: nn.Sequential, segments: list[tuple[int, int]]):
        self.owner, self.segments = owner, sorted(segments)

    def __call__(self, input):
        units = tuple(self.owner.children())
        if not torch.is_grad_enabled():
            return _run_units(units, input)
        position = 0
        for start, stop in self.segments:
            start = _past_inplace_units(units, start, stop)
            input = _run_units(units[position:start], input)
            piece = units[start:stop]
            input = _SEGMENT(functools.partial(_run_units, piece), piece, input)
            position = stop
        return _run_units(units[position:], input)


class _CheckpointedBlock(InstalledForward):
    """``forward`` of a block whose whole forward is checkpointed."""

    def __init__(self, owner: nn.Module):
        self.owner = owner

    def __call__(self, *args, **kwargs):
        forward = type(self.owner).forward.__get__(self.owner)
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return _SEGMENT(forward, (self.owner,), *args, **kwargs)


# Plans ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointPlan:
    """What :func:`xconv.checkpoint_sequential` did: the mode, the segments and (budget mode) the planner's report."""

    mode: str
    units: int
    segment_length: int | None
    segments: tuple[Segment, ...]
    budget: object | None = None  # xconv.planner.BudgetReport
    pending: bool = False  # budget mode without example input: planned at the first training forward
    # Bytes the largest segment's recomputation saves in backward (beyond what the forward kept);
    # measured on the first training call with ``measure_recompute=True`` or by the planner.
    recompute_bytes: int | None = None
    # sqrt/every mode with an example input: why no segment was installed (the plan would not have kept
    # less than the model without checkpointing), else None.
    declined: str | None = None

    @property
    def recomputed_units(self) -> int:
        return sum(len(segment) for segment in self.segments)

    def summary(self) -> dict:
        out = {"mode": self.mode, "units": self.units, "segment_length": self.segment_length,
               "segments": len(self.segments), "recomputed_units": self.recomputed_units,
               "segment_names": [f"{s.part or '<root>'}[{s.start}:{s.stop}]" for s in self.segments],
               "recompute_bytes": self.recompute_bytes}
        if self.declined is not None:
            out["declined"] = self.declined
        if self.budget is not None:
            out["budget"] = self.budget.summary()
        return out


def install_segments(model: nn.Module, segments, plan: CheckpointPlan | None = None) -> None:
    """Make ``segments`` of ``model`` recompute in backward (after undoing any earlier segmentation)."""
    uncheckpoint(model)
    parts = {part.name: part for part in find_sequential_parts(model)}
    chosen: dict[str, list[tuple[int, int]]] = {}
    for segment in segments:
        part = parts.get(segment.part)
        if part is None:
            raise ValueError(f"segment {segment}: {segment.part!r} is not a chain or block of this model; "
                             f"those are {sorted(parts)}")
        if not 0 <= segment.start < segment.stop <= len(part.units) or (not part.chain and segment.stop != 1):
            raise ValueError(f"segment {segment}: units {segment.start}..{segment.stop - 1} do not exist in "
                             f"{segment.part!r} ({len(part.units)} units)")
        chosen.setdefault(segment.part, []).append((segment.start, segment.stop))
    for name, ranges in chosen.items():
        ranges.sort()
        if any(a[1] > b[0] for a, b in zip(ranges, ranges[1:])):
            raise ValueError(f"segments of {name!r} overlap: {ranges}")
        part = parts[name]
        part.module.forward = (_SegmentedSequential(part.module, ranges) if part.chain
                               else _CheckpointedBlock(part.module))
    if plan is not None:
        record_plan(model, plan)


def _installed_forwards(model: nn.Module) -> list[tuple[nn.Module, object]]:
    """``(module, forward)`` for every installed ``forward`` attribute of ``model``'s modules."""
    return [(module, module.__dict__["forward"]) for module in model.modules()
            if isinstance(module.__dict__.get("forward"), InstalledForward)]


def uncheckpoint(model: nn.Module) -> nn.Module:
    """Remove every segmentation (and pending budget plan) installed on ``model`` (plain forward everywhere)."""
    for module, _ in _installed_forwards(model):
        del module.__dict__["forward"]
    model.__dict__.pop(_PLAN_ATTRIBUTE, None)
    return model


def checkpoint_plan(model: nn.Module) -> CheckpointPlan | None:
    """The plan installed on ``model`` by :func:`xconv.checkpoint_sequential`, or None."""
    return model.__dict__.get(_PLAN_ATTRIBUTE)


def record_plan(model: nn.Module, plan: CheckpointPlan) -> None:
    """Make ``plan`` the one :func:`checkpoint_plan` returns for ``model``."""
    setattr(model, _PLAN_ATTRIBUTE, plan)


@contextlib.contextmanager
def suspended(model: nn.Module):
    """Inside the block ``model`` runs without checkpointing (its segmentation is restored after)."""
    removed = _installed_forwards(model)
    for module, _ in removed:
        del module.__dict__["forward"]
    try:
        yield
    finally:
        for module, forward in removed:
            module.__dict__["forward"] = forward


def with_budget_report(plan: CheckpointPlan, report) -> CheckpointPlan:
    """``plan`` with the planner's report (an :class:`xconv.planner.BudgetReport`) filled in."""
    return replace(plan, budget=report, pending=False, recompute_bytes=report.measured_recompute)
