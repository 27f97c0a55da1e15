"""Which code a run ran: the git commit of the checkout the harness was imported from, and whether
the tree was clean (no changes to tracked files, no untracked files that git does not ignore).

A wheel install is no checkout: ``commit`` and ``clean`` are then None and ``source`` says
``installed``. Tables refuse runs from a dirty tree unless told otherwise, so that every
number in ``results/`` can be traced to a commit.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

HARNESS_SOURCE = Path(__file__).resolve().parent


def _git(folder: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def code_state(folder: Path = HARNESS_SOURCE) -> dict:
    """``{"source": "git" | "installed", "commit": sha | None, "clean": bool | None}`` of ``folder``'s
    checkout (by default the one this harness runs from)."""
    top = _git(folder, "rev-parse", "--show-toplevel")
    commit = _git(folder, "rev-parse", "HEAD")
    if top is None or commit is None:
        return {"source": "installed", "commit": None, "clean": None}
    status = _git(Path(top.strip()), "status", "--porcelain", "--untracked-files=normal")
    return {"source": "git", "commit": commit.strip(), "clean": None if status is None else status.strip() == ""}
