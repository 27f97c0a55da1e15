"""Side-by-side timing for the benchmark scripts (bench_layers.py, speed.py).

Every variant of a case (the exact layer or model and its XConv versions) is
stepped in the same loop, one after the other in each repeat, with the order
rotating from repeat to repeat, so all variants see the same machine state.
A variant is a zero-argument callable that runs one training step; the time of
a step is the wall clock between two device synchronisations (CUDA runs
asynchronously; on CPU synchronising is a no-op). Tests never assert on these
times.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable

import torch

Step = Callable[[], None]


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Step, device: torch.device | str) -> float:
    """Seconds one call of ``step`` takes, between device synchronisations."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def median_times_ms(steps: dict[Hashable, Step], repeats: int, warmup: int,
                    device: torch.device | str, min_seconds: float = 0.0,
                    max_rounds: int = 100) -> dict[Hashable, float]:
    """Median milliseconds per step of every variant; ``warmup`` rounds are not timed.

    At least ``repeats`` timed rounds; more (up to ``max_rounds``) while any variant has
    spent less than ``min_seconds`` in timed steps, so that fast steps get enough samples.
    """
    if repeats < 1 or warmup < 0 or min_seconds < 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0, min_seconds >= 0; got repeats={repeats}, "
                         f"warmup={warmup}, min_seconds={min_seconds}")
    keys = list(steps)
    times = {key: [] for key in keys}
    round_ = 0
    while round_ < warmup + repeats or (round_ < warmup + max(repeats, max_rounds) and
                                        min(sum(values) for values in times.values()) < min_seconds):
        shift = round_ % len(keys)
        for key in keys[shift:] + keys[:shift]:
            seconds = timed(steps[key], device)
            if round_ >= warmup:
                times[key].append(seconds)
        round_ += 1
    return {key: 1e3 * statistics.median(values) for key, values in times.items()}


class ModeComparison:
    """Properties of a measured mode against the exact mode measured beside it, for row dataclasses with
    ``saved`` and ``recompute`` (activation bytes), ``step_ms``, ``exact_peak`` and ``exact_ms``."""

    saved: int
    recompute: int
    step_ms: float
    exact_peak: int
    exact_ms: float

    @property
    def peak(self) -> int:
        """Activation memory: bytes kept after forward plus the largest checkpoint recomputation."""
        return self.saved + self.recompute

    @property
    def memory_factor(self) -> float:
        """exact / this mode (> 1: keeps less)."""
        return self.exact_peak / self.peak if self.peak else float("inf")

    @property
    def time_ratio(self) -> float:
        """this mode / exact (> 1: slower)."""
        return self.step_ms / self.exact_ms


def backward_step(module: torch.nn.Module, inputs: tuple, grad: torch.Tensor,
                  leaf: torch.Tensor | None = None) -> Step:
    """A step: ``module(*inputs).backward(grad)`` after resetting the gradients of
    ``module`` (and of ``leaf``, an input that requires grad, if given)."""
    def step() -> None:
        if leaf is not None:
            leaf.grad = None
        module.zero_grad(set_to_none=True)
        module(*inputs).backward(grad)
    return step
