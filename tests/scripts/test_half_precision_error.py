"""scripts/half_precision_error.py at a tiny size: structure, rounding floors, XConv error falling with r."""
import importlib
import math
from pathlib import Path

import pytest

from results_tables import csv_rows, is_png, markdown_tables

TINY = ["--networks", "squeezenet1_0", "--sizes", "32", "--subset", "16", "--batch", "4",
        "--probes", "2,32", "--kinds", "channel", "--runs", "3"]


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("xconv_harness.studies.half_precision_error")


@pytest.fixture(scope="module")
def tiny(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("half_precision") / "half"
    script.main(TINY + ["--out", str(out)])
    return out


def test_outputs(script, tiny):
    text = tiny.with_suffix(".md").read_text()
    for line in ["# bfloat16: XConv gradient error", "- command: `python scripts/half_precision_error.py",
                 "- date: ", "- machine: ", "- scale: subset 16 in minibatches of 4", "Wall time: "]:
        assert line in text
    rows, summary = markdown_tables(text)
    assert rows["header"] == script.COLUMNS and summary["header"] == script.SUMMARY_COLUMNS
    assert [(row["precision"], row["mode"], row["r"]) for row in rows["rows"]] == [
        ("bf16", "exact", "0"), ("fp32", "exact", "0"),
        ("bf16", "xconv", "2"), ("fp32", "xconv", "2"), ("bf16", "xconv", "32"), ("fp32", "xconv", "32")]
    assert [(row["probe"], row["precision"]) for row in summary["rows"]] == [("channel", "bf16"),
                                                                            ("channel", "fp32")]
    assert len(csv_rows(tiny.with_suffix(".csv"))) == 6
    assert is_png(tiny.with_suffix(".png"))


def test_rounding_floor_and_xconv_error(tiny):
    rows = {(row["precision"], row["r"]): row for row in csv_rows(tiny.with_suffix(".csv"))}
    value = lambda key, column: float(rows[key][column])
    bf16_floor = value(("bf16", "0"), "error_vs_fp64_mean")
    fp32_floor = value(("fp32", "0"), "error_vs_fp64_mean")
    # bfloat16 keeps 8 significant bits, float32 24: its rounding error is far larger, yet not zero.
    assert 0 < fp32_floor < 1e-6 * bf16_floor
    for precision in ("bf16", "fp32"):
        (few, few_std), (many, many_std) = ((value((precision, r), "error_vs_fp64_mean"),
                                             value((precision, r), "error_std")) for r in ("2", "32"))
        assert few - many > 5 * math.sqrt((few_std ** 2 + many_std ** 2) / 3), (precision, few, many)
        assert bf16_floor < few - 3 * few_std / math.sqrt(3)
