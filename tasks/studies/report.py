"""What every results script shares: provenance header, markdown/csv tables, figures.

Each table in ``results/`` states the command that produced it, the code it ran
(git commit and whether the tree was clean), the date, the machine and the scale.
"""
from __future__ import annotations

import csv
import datetime
import io
import os
import shlex
import sys
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..provenance import code_state
from ..run_files import cpu_model  # shared with the harness's run summaries


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command a user would type to reproduce this run, e.g. ``python scripts/x.py --a 1``."""
    args = sys.argv[1:] if argv is None else list(argv)
    return f"python scripts/{script} {shlex.join(args)}".strip()


def machine(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    text = (f"{cpu_model()}, {os.cpu_count()} logical CPUs, "
            f"torch.get_num_threads()={torch.get_num_threads()}, device={device}")
    if device.type == "cuda":
        text += f" ({torch.cuda.get_device_name(device)})"
    return text


def code_text(code: dict) -> str:
    """``commit 1a2b3c4 (clean tree)``, ``commit 1a2b3c4 with uncommitted changes``, or ``an installed copy``."""
    if code.get("commit") is None:
        return "an installed copy (no git commit)"
    state = {True: "(clean tree)", False: "with uncommitted changes"}.get(code.get("clean"), "(tree state unknown)")
    return f"commit {code['commit'][:7]} {state}"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def provenance(title: str, command: str, scale: str, device: torch.device | str = "cpu") -> list[str]:
    """Markdown header lines: title, command, code, date, machine, torch version, scale."""
    return [f"# {title}", "",
            f"- command: `{command}`",
            f"- code: {code_text(code_state())}",
            f"- date: {utc_now()}",
            f"- machine: {machine(device)}",
            f"- torch: {torch.__version__}",
            f"- scale: {scale}", ""]


def format_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ["B", "KiB", "MiB", "GiB"]:
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """Lines of a GitHub markdown table; cells are written with ``str``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def csv_text(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` via a temporary file and a rename, so a reader never sees half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)
    return path


def save_figure(figure, path: Path | str) -> Path:
    """Save a matplotlib figure as PNG (no timestamp metadata, so reruns are comparable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path


def pyplot():
    """matplotlib's pyplot with the non-interactive Agg backend (no display here or in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
