"""Reading what the results scripts write: markdown tables and csv files."""
from __future__ import annotations

import csv
from pathlib import Path


def markdown_tables(text: str) -> list[dict]:
    """Every markdown table in ``text`` as ``{"header": [columns], "rows": [{column: cell}, ...]}``."""
    tables, current = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("| "):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if current is None:
                current = {"header": cells, "rows": []}
            else:
                current["rows"].append(dict(zip(current["header"], cells)))
        elif line.startswith("|---"):
            continue
        elif current is not None:
            tables.append(current)
            current = None
    return tables


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
