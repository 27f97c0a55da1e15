"""How a results table shows a task's metric; tasks declare theirs (:class:`xconv_harness.base.XConvTask`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A task metric as the tables show it: ``value * scale`` with ``digits`` decimals."""

    key: str
    label: str
    scale: float = 1.0
    digits: int = 2
    higher_is_better: bool = True

    def text(self, value: float | None) -> str:
        return "n/a" if value is None else f"{value * self.scale:.{self.digits}f}"


def percent(key: str, label: str) -> Metric:
    """A fraction shown in percent, e.g. ``percent("test/acc", "test acc")`` -> "test acc (%)"."""
    return Metric(key, f"{label} (%)", scale=100.0, digits=2)
