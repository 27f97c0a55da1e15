"""scripts/layer_memory.py at a tiny size: outputs, per-layer bookkeeping, and the ordering of the modes."""
import csv
from pathlib import Path

import pytest

from xconv_harness.studies.memory_by_kind import MODES

MODES = list(MODES)  # exact, xconv, xconv + 1-bit ReLU, xconv + lossless, xconv + compact


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("layer_memory") / "layer_memory"
    from xconv_harness.studies.layer_memory import main
    results = main(["--networks", "resnet18,squeezenet1_1", "--batch", "1", "--size", "64", "--probes", "4",
                    "--out", str(out)])
    return out, results


def test_outputs_and_per_layer_rows(run):
    out, results = run
    text = out.with_suffix(".md").read_text()
    for line in ["- command: `python scripts/layer_memory.py --networks resnet18,squeezenet1_1", "- date: ",
                 "- machine: ", "- scale: ", "## resnet18", "## squeezenet1_1", "<details>"]:
        assert line in text
    assert out.with_suffix(".png").stat().st_size > 10_000
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert list(rows[0]) == ["network", "index", "module", "kind"] + [f"{m} bytes" for m in MODES] + \
        [f"{m} cumulative bytes" for m in MODES]
    for network, layers in results.items():
        mine = [row for row in rows if row["network"] == network]
        assert [int(row["index"]) for row in mine] == list(range(len(layers)))
        for mode in MODES:  # the cumulative column ends at the network's total
            assert int(mine[-1][f"{mode} cumulative bytes"]) == sum(int(row[f"{mode} bytes"]) for row in mine)
    resnet = [row for row in rows if row["network"] == "resnet18"]
    assert resnet[0]["module"] == "conv1" and resnet[0]["kind"] == "Conv2d"
    assert resnet[-1]["module"] == "fc"
    # the first conv keeps its input (1x3x64x64 floats) when exact and a 4x1x3 sketch with XConv
    assert int(resnet[0]["exact bytes"]) == 3 * 64 * 64 * 4
    assert int(resnet[0]["xconv bytes"]) == 4 * 3 * 4


def test_one_bit_relu_below_xconv_below_exact_for_resnet18(run):
    _, results = run
    totals = {mode: sum(layer.saved[mode] for layer in results["resnet18"]) for mode in MODES}
    assert totals["xconv + 1-bit ReLU"] < totals["xconv"] < totals["exact"]
    # Each ReLU keeps 1 bit instead of 32 per element, or (keep once, xconv.keep_once) stays torch's where its
    # output is kept anyway: by torch's max-pool (the stem) or by a convolution left plain (its sketch would
    # not be smaller at this size)
    relus = [layer for layer in results["resnet18"] if layer.kind == "ReLU"]
    bits = [layer.name for layer in relus if layer.saved["xconv + 1-bit ReLU"] * 30 < layer.saved["exact"]]
    plain = [layer.name for layer in relus if layer.saved["xconv + 1-bit ReLU"] == layer.saved["exact"] > 0]
    assert sorted(bits + plain) == sorted(layer.name for layer in relus) and bits and "relu" in plain
