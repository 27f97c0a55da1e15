"""scripts/depth_scaling.py on a tiny grid: growth exponents and output structure (no assertion on time)."""
import importlib
import csv
from pathlib import Path

import pytest

TINY = ["--depths", "4,8,16,32,64", "--models", "resnet18", "--model-size", "32", "--model-batch", "2",
        "--repeats", "1", "--warmup", "0"]


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("xconv_harness.studies.depth_scaling")


@pytest.fixture(scope="module")
def result(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("depth") / "depth_scaling.md"
    return script.main(TINY + ["--out", str(out)]), out


def test_sqrt_checkpointing_grows_like_sqrt_and_exact_linearly(result):
    fits = result[0]["fits"]
    assert fits["exact"]["peak"] > 0.85 and fits["xconv"]["peak"] > 0.85
    assert fits["checkpoint"]["peak"] < 0.7 and fits["xconv+checkpoint"]["peak"] < 0.7


def test_exact_memory_is_one_activation_per_block(result, script):
    """Exact: each block keeps its ReLU output (4*8*16*16 float32), plus the stem's input and the head's."""
    rows = [r for r in result[0]["rows"] if r.block == "depth" and r.mode == "exact"]
    per_block = 4 * 8 * 16 * 16 * 4
    constant = rows[0].peak - rows[0].depth * per_block
    assert all(r.peak == r.depth * per_block + constant for r in rows)
    assert 0 < constant < per_block


def test_outputs(result, script):
    outcome, out = result
    text = out.read_text()
    assert text == outcome["markdown"]
    for line in ["# Activation memory and step time vs depth", "- command: `python scripts/depth_scaling.py --depths",
                 "- date: ", "- machine: ", "- torch: ", "- scale: depth sweep: residual stack, n = 4, 8, 16, 32, 64",
                 "## Growth exponent vs depth", "## Depth sweep", "## Models: each mode vs exact"]:
        assert line in text, line
    with open(out.with_suffix(".csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == script.COLUMNS
    assert len(rows) == 5 * 4 + 5  # 5 depths x 4 modes, ResNet-18 x 5 modes
    model_rows = [r for r in rows if r["block"] == "model"]
    assert [r["mode"] for r in model_rows] == ["exact", "checkpoint", "xconv (convs only)", "xconv",
                                               "xconv+checkpoint"]
    exact = model_rows[0]
    assert float(exact["memory_factor"]) == 1.0 and float(exact["time_ratio"]) == 1.0
    for row in model_rows:
        assert int(row["peak_bytes"]) == int(row["saved_bytes"]) + int(row["recompute_bytes"])
        assert float(row["memory_factor"]) == pytest.approx(int(exact["peak_bytes"]) / int(row["peak_bytes"]),
                                                            rel=1e-3)
    assert float(model_rows[1]["memory_factor"]) > 1.2  # checkpointing ResNet-18 stages saves memory
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_bad_arguments_are_refused(script):
    with pytest.raises(SystemExit):
        script.parse_args(["--models", "vgg"])
    with pytest.raises(SystemExit):
        script.parse_args(["--depths", "0,4"])
