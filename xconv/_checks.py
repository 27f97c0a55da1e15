"""Argument validation shared by the layers and model conversion.

Every error names the argument, the value it got and what is allowed.
"""
from __future__ import annotations

import numbers

from .probes import probe_kind


def check_probes(probes) -> int:
    """Return ``probes`` as an int, or raise if it is not an integer >= 0."""
    if isinstance(probes, bool) or not isinstance(probes, numbers.Integral):
        raise TypeError(f"probes must be an integer >= 0 (0 = exact backprop), got {probes!r}")
    if probes < 0:
        raise ValueError(f"probes must be an integer >= 0 (0 = exact backprop), got {probes}")
    return int(probes)


def check_probe_kind(probe) -> str:
    """Return ``probe`` if it names a registered probe kind (:mod:`xconv.probes`), else raise."""
    return probe_kind(probe).name
