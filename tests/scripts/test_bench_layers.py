"""Smoke test of scripts/bench_layers.py on a tiny grid (no assertion on wall-clock time)."""
import importlib
from pathlib import Path

import pytest

TINY = ["--shapes", "16x8", "--batches", "16", "--probes", "2", "--kinds", "channel,gaussian",
        "--repeats", "1", "--warmup", "0"]


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("xconv_harness.studies.bench_layers")


def table_rows(text):
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    split = lambda line: [cell.strip() for cell in line.strip("|").split("|")]
    header, rows = split(lines[0]), [split(line) for line in lines[1:]]
    return header, [dict(zip(header, row)) for row in rows]


def test_tiny_grid_table_and_memory_factor(bench, capsys, tmp_path):
    out = tmp_path / "bench.md"
    rows = bench.main(TINY + ["--out", str(out)])
    printed = capsys.readouterr().out

    header, cells = table_rows(printed)
    assert header == bench.COLUMNS
    assert header == ["resolution", "C", "HxW", "B", "probe", "r", "r<=B/8", "exact ms", "xconv ms",
                      "time ratio xconv/exact", "saved exact", "saved xconv", "mem factor exact/xconv",
                      "predicted factor"]
    assert [(c["C"], c["HxW"], c["B"], c["probe"], c["r"], c["r<=B/8"]) for c in cells] == [
        ("16", "8x8", "16", "channel", "2", "yes"), ("16", "8x8", "16", "gaussian", "2", "yes")]
    for line in ["- command: `python scripts/bench_layers.py --shapes 16x8", "- date: ",
                 "- machine: ", "torch.get_num_threads()=", "- torch: ",
                 "- channel: time ratio <= 1.0 in", "- gaussian: time ratio <= 1.0 in"]:
        assert line in printed
    assert out.read_text().splitlines()[0] == printed.splitlines()[0]
    assert table_rows(out.read_text())[1] == cells

    # Saved memory: exact keeps B*C*H*W floats; channel keeps r*B*C (factor H*W/r = 32),
    # gaussian keeps B*r (factor C*H*W/r = 512).
    for row, expected in zip(rows, [32.0, 512.0]):
        assert row.exact_bytes == 16 * 16 * 8 * 8 * 4
        assert row.predicted_factor == expected
        assert row.memory_factor == pytest.approx(row.predicted_factor, rel=0.05)
    for cell in cells:
        measured, predicted = float(cell["mem factor exact/xconv"]), float(cell["predicted factor"])
        assert measured == pytest.approx(predicted, rel=0.05)
