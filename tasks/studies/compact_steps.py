"""How ``xconv.compact.STEPS`` were made: minimax piecewise-constant stand-ins for activation derivatives.

A compact activation keeps a ``bits``-bit code saying which of ``2**bits`` intervals of the input
axis an input lies in, and its backward multiplies by that interval's constant. For a target error
``e`` the construction walks a float64 grid of ``x`` (spacing ``SPACING`` over ``[-RANGE, RANGE]``,
where every derivative here is within 1e-15 of its limits) from the left, and starts a new interval
at the first grid point where the derivative's range on the current interval would exceed ``2e``;
each interval's constant is the middle of that range, so the largest error is at most ``e``. It
bisects ``e`` down to the smallest value that needs at most ``2**bits`` intervals (greedy covering is
optimal for a fixed ``e``, so this is the minimax over breakpoints on the grid). The derivative is
torch's own backward in float64.

    python scripts/compact_steps.py               # every kind and bit width, beside the committed STEPS

What it reproduces of the committed table (they came from an earlier run of this construction on a
grid aligned differently, breakpoints then rounded to 5 decimals and constants to 7 digits): where
the minimax needs every one of the ``2**bits`` intervals (SiLU, both GELUs, Mish) the breakpoints
agree within 3 grid steps (Mish: exactly) and the constants within 2e-5; Sigmoid and Tanh (2 and 4
bits) reach their minimax error with one interval fewer, and the committed table splits
one interval in two (which leaves its error unchanged). In every case the committed bound (a
ceiling to 4 digits) is at least the error found here and at most 0.1 % above it; the tests check
that (``tests/scripts/test_compact_steps.py``), and ``tests/xconv/test_compact.py`` checks each
committed bound on a dense grid.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from xconv.compact import STEPS, Steps

SPACING, RANGE = 2e-5, 40.0
#: Each smooth kind's forward (its derivative is taken by torch's backward); hardswish's steps are exact
#: by hand in ``xconv.compact`` and not made here.
FUNCTIONS = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
             "mish": F.mish, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def derivative_grid(kind: str, spacing: float = SPACING, extent: float = RANGE) -> tuple[np.ndarray, np.ndarray]:
    """``(x, f'(x))`` in float64 on the grid ``-extent, -extent + spacing, ..., extent``."""
    x = torch.arange(round(2 * extent / spacing) + 1, dtype=torch.float64) * spacing - extent
    x.requires_grad_(True)
    FUNCTIONS[kind](x).sum().backward()
    return x.detach().numpy(), x.grad.numpy()


def interval_starts(derivative: np.ndarray, error: float) -> list[int]:
    """Grid indices where the greedy cover with largest error ``error`` starts each interval."""
    starts, start = [0], 0
    while True:
        rest = derivative[start:]
        over = np.flatnonzero(np.maximum.accumulate(rest) - np.minimum.accumulate(rest) > 2 * error)
        if len(over) == 0:
            return starts
        start += int(over[0])
        starts.append(start)


def minimax_steps(kind: str, bits: int, spacing: float = SPACING, iterations: int = 40) -> Steps:
    """The fewest-error ``2**bits``-interval steps of ``kind``'s derivative on the grid (see the module)."""
    x, derivative = derivative_grid(kind, spacing)
    low, high = 0.0, float(derivative.max() - derivative.min())  # one interval always fits ``high``
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (low, middle) if len(interval_starts(derivative, middle)) <= 2 ** bits else (middle, high)
    bounds = [*interval_starts(derivative, high), len(derivative)]
    pieces = [derivative[a:b] for a, b in zip(bounds, bounds[1:])]
    return Steps(breaks=tuple(float(x[a]) for a in bounds[1:-1]),
                 values=tuple(float(piece.max() + piece.min()) / 2 for piece in pieces),
                 bound=max(float(piece.max() - piece.min()) / 2 for piece in pieces))


def compare(kind: str, bits: int, spacing: float = SPACING) -> dict:
    """The construction beside the committed ``STEPS[(kind, bits)]``: interval counts, largest
    breakpoint and constant differences (when the counts agree), and both errors."""
    made, committed = minimax_steps(kind, bits, spacing), STEPS[(kind, bits)]
    same = len(made.breaks) == len(committed.breaks)
    return {"kind": kind, "bits": bits, "intervals": len(made.values), "committed_intervals": len(committed.values),
            "break_diff": max(abs(a - b) for a, b in zip(made.breaks, committed.breaks)) if same else None,
            "value_diff": max(abs(a - b) for a, b in zip(made.values, committed.values)) if same else None,
            "bound": made.bound, "committed_bound": committed.bound}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spacing", type=float, default=SPACING, help=f"grid spacing (default {SPACING})")
    args = parser.parse_args(argv)
    print("| kind | bits | intervals (committed) | max break diff | max constant diff | error | committed bound |")
    print("|---|---|---|---|---|---|---|")
    for kind in FUNCTIONS:
        for bits in (2, 4):
            row = compare(kind, bits, args.spacing)
            diff = lambda value: "n/a (one interval split)" if value is None else f"{value:.1e}"
            print(f"| {kind} | {bits} | {row['intervals']} ({row['committed_intervals']}) | {diff(row['break_diff'])} "
                  f"| {diff(row['value_diff'])} | {row['bound']:.5f} | {row['committed_bound']} |", flush=True)
