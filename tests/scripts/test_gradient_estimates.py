"""scripts/gradient_estimates.py at a tiny size: output structure; XConv noise above exact, falling with r."""
import importlib
import math
from pathlib import Path

import pytest

from results_tables import csv_rows, is_png, markdown_tables

MINIBATCHES = 4
TINY = ["--batch", "40", "--subbatches", "8", "--probes", "64", "--channel-probes", "16",
        "--std-batches", "8,16", "--std-probes", "0,2,32", "--minibatches", str(MINIBATCHES)]
LAYERS = ["conv1", "conv2", "conv3", "conv4"]
WEIGHTS = {"conv1": 3 * 16 * 25, "conv2": 16 * 32 * 25, "conv3": 32 * 32 * 25, "conv4": 32 * 32 * 25}


@pytest.fixture(scope="module")
def script():
    return importlib.import_module("xconv_harness.studies.gradient_estimates")


@pytest.fixture(scope="module")
def tiny(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("gradient_estimates") / "est"
    script.main(TINY + ["--out", str(out)])
    return out


def test_outputs(script, tiny):
    text = tiny.with_suffix(".md").read_text()
    for line in ["- command: `python scripts/gradient_estimates.py --batch 40", "- date: ", "- machine: ",
                 "- scale: CifarNet (seed 17); data: random 32x32 crops", "4 minibatches each", "Wall time: "]:
        assert line in text
    estimates, stds = markdown_tables(text)
    assert estimates["header"] == script.ESTIMATE_COLUMNS and stds["header"] == script.STD_COLUMNS
    gradients = [f"xconv {kind}" for kind in ("channel", "gaussian", "rademacher", "orthogonal")]
    assert [(row["layer"], row["gradient"]) for row in estimates["rows"]] == [
        (layer, gradient) for layer in LAYERS for gradient in gradients + ["exact full batch"]]
    assert [(row["batch"], row["r"]) for row in stds["rows"]] == [
        (b, r) for b in ("8", "16") for r in ("0", "2", "32")]
    for row in estimates["rows"]:
        assert 0 <= float(row["in 99% band (all weights)"]) <= 1
    assert len(csv_rows(tiny.parent / "est_estimates.csv")) == len(estimates["rows"])
    assert len(csv_rows(tiny.parent / "est_std.csv")) == len(stds["rows"])
    assert is_png(tiny.parent / "est_estimates.png") and is_png(tiny.parent / "est_std.png")


def test_xconv_std_is_above_exact_and_falls_with_r(tiny):
    rows = {(row["batch"], row["r"]): row for row in csv_rows(tiny.parent / "est_std.csv")}
    for layer in LAYERS:
        # Relative standard error of a mean over the layer's weights of per-weight variances from
        # MINIBATCHES samples: sqrt(2 / ((MINIBATCHES - 1) * weights)) for independent weights; the bound
        # allows 10 of them on the ratio of two such RMS stds.
        margin = 1 + 10 * math.sqrt(2 / ((MINIBATCHES - 1) * WEIGHTS[layer]))
        for batch in ("8", "16"):
            exact, r2, r32 = (float(rows[(batch, r)][f"{layer}_std"]) for r in ("0", "2", "32"))
            assert r2 > margin * exact, (layer, batch, exact, r2)
            assert r2 > margin * r32, (layer, batch, r2, r32)
