"""scripts/gradient_error.py at a tiny size: output structure, error falling with r, SGD floor below XConv."""
import importlib
import math
from pathlib import Path

import pytest

from results_tables import csv_rows, is_png, markdown_tables

KINDS = ["channel", "gaussian"]
TINY = ["--networks", "unet3d", "--sizes-3d", "8", "--subset", "16", "--batch", "4", "--probes", "2,32",
        "--kinds", ",".join(KINDS), "--runs", "8"]


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("xconv_harness.studies.gradient_error")


@pytest.fixture(scope="module")
def tiny(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("gradient_error") / "age"
    script.main(TINY + ["--out", str(out)])
    return out


def test_outputs(script, tiny):
    text = tiny.with_suffix(".md").read_text()
    for line in ["# Average gradient error", "- command: `python scripts/gradient_error.py --networks unet3d",
                 "- date: ", "- machine: ", "- scale: subset 16 samples in minibatches of 4", "Wall time: "]:
        assert line in text
    age, slopes = markdown_tables(text)
    assert age["header"] == script.COLUMNS and slopes["header"] == script.SLOPE_COLUMNS
    expected = [("exact", "-", "0")] + [("xconv", kind, r) for kind in KINDS for r in ("2", "32")]
    assert [(row["mode"], row["probe"], row["r"]) for row in age["rows"]] == expected
    assert {(row["network"], row["size"]) for row in age["rows"]} == {("unet3d", "8")}
    assert [row["probe"] for row in slopes["rows"]] == KINDS
    rows = csv_rows(tiny.with_suffix(".csv"))
    assert [(row["mode"], row["probe"], row["r"]) for row in rows] == expected
    assert len(csv_rows(tiny.parent / "age_slopes.csv")) == len(KINDS)
    assert is_png(tiny.with_suffix(".png"))


def test_error_falls_with_r_and_exact_floor_is_below_xconv(tiny):
    rows = csv_rows(tiny.with_suffix(".csv"))
    floor = float(rows[0]["AGE_mean"])
    for kind in KINDS:
        few, many = ([float(row[key]) for key in ("AGE_mean", "AGE_std", "runs")]
                     for row in rows if row["probe"] == kind)  # r = 2, then r = 32
        # Means over 8 runs: the difference must exceed 4 standard errors of the difference.
        standard_error = math.sqrt((few[1] ** 2 + many[1] ** 2) / few[2])
        assert few[0] - many[0] > 4 * standard_error, (kind, few, many)
        # The SGD floor lies below XConv at r=2 by more than 3 standard errors of that mean.
        assert floor < few[0] - 3 * few[1] / math.sqrt(few[2]), (kind, floor, few)


def test_bad_network_is_named(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--networks", "resnet9000"])
    error = capsys.readouterr().err
    assert "--networks: 'resnet9000' is not a network of the study; allowed squeezenet1_0" in error
