"""Optimisers and learning-rate schedulers: what their configs may set and what a task adds.

``conf/optimizer/*.yaml`` and ``conf/scheduler/*.yaml`` name a torch class (or :class:`WarmupCosine`)
in ``_target_`` with ``_partial_: true`` and hold its arguments; the task completes the call
(:meth:`xconv_harness.base.XConvTask.configure_optimizers`). Which keys a section takes follows
from its target's constructor (:mod:`xconv_harness.schema`); what the values may be is
:data:`OPTIMIZER_RULES` / :data:`SCHEDULER_RULES`. What the run adds to a scheduler, and how
Lightning steps it, is :data:`STEPPING`, the one place for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, ReduceLROnPlateau

from .rules import POSITIVE, Choice, Flag, Integer, ListOf, Number, Text, require_int

# Arguments of torch's optimisers (any optimiser taking one of them).
OPTIMIZER_RULES = {
    "_target_": Text(),
    "lr": Number(above=0),
    "weight_decay": Number(least=0),
    "momentum": Number(least=0, below=1),
    "dampening": Number(least=0, most=1),
    "nesterov": Flag(),
    "betas": ListOf(item=Number(least=0, below=1), items=2),
    "eps": Number(above=0),
    "amsgrad": Flag(),
}
# Arguments of the schedulers (and ``monitor``, Lightning's, for a scheduler that steps on a metric).
SCHEDULER_RULES = {
    "_target_": Text(null="no scheduler"),
    "eta_min": Number(least=0),
    "T_max": POSITIVE,
    "warmup_steps": Integer(least=0),
    "factor": Number(above=0, below=1),
    "patience": Integer(least=0),
    "threshold": Number(least=0),
    "threshold_mode": Choice(options=("rel", "abs")),
    "mode": Choice(options=("min", "max")),
    "cooldown": Integer(least=0),
    "min_lr": Number(least=0),
    "eps": Number(least=0),
    "monitor": Text(),
}


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, floor: float) -> float:
    """LR factor: linear warm-up to 1 over ``warmup_steps``, then cosine down to ``floor``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosine(LambdaLR):
    """Linear warm-up over ``warmup_steps`` optimiser steps, then cosine annealing to ``eta_min`` at
    ``total_steps`` (diffusers' ``get_cosine_schedule_with_warmup``); stepped every optimiser step."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                 eta_min: float = 0.0):
        require_int("scheduler.warmup_steps", warmup_steps, 0)
        floor = eta_min / optimizer.defaults["lr"]
        super().__init__(optimizer, lambda step: warmup_cosine(step, warmup_steps=warmup_steps,
                                                               total_steps=total_steps, floor=floor))


def total_steps(trainer) -> int:
    """The optimiser steps of the whole run (a finite run only)."""
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise ValueError("scheduler.name=warmup_cosine needs a finite run: set trainer.max_epochs "
                         "or trainer.max_steps")
    return int(total)


@dataclass(frozen=True)
class Stepping:
    """How a task runs a scheduler class: Lightning's ``interval`` ("epoch" or "step"), the constructor
    arguments the run supplies (a scheduler config's own values win) and whether it steps on a
    metric (Lightning's ``monitor``: the config's ``monitor``, else the task's ``monitor_metric``)."""

    interval: str = "epoch"
    supplies: Callable = lambda task: {}
    monitored: bool = False


STEPPING = {
    ReduceLROnPlateau: Stepping("epoch", lambda task: {"mode": task.monitor_mode}, monitored=True),
    CosineAnnealingLR: Stepping("epoch", lambda task: {"T_max": max(1, task.trainer.max_epochs or 1)}),
    WarmupCosine: Stepping("step", lambda task: {"total_steps": total_steps(task.trainer)}),
}
# Scheduler arguments only the run supplies (not config keys).
RUN_SUPPLIED = {"total_steps"}


def stepping(scheduler_class) -> Stepping:
    """The entry of :data:`STEPPING` for a scheduler class or its nearest base (default: every epoch)."""
    return next((STEPPING[cls] for cls in scheduler_class.__mro__ if cls in STEPPING), Stepping())
