"""scripts/table_timing.py: every row of a table timed beside exact on one batch in one loop."""
import csv

from xconv_harness.config_files import compose_experiment
from xconv_harness.studies import table_timing
from xconv_harness.studies.run_summaries import Gradient, Row, Table

SMALL = ("data=digits", "data.batch_size=8", "data.train_subset=64")
XCONV16 = Gradient(mode="xconv", probes=16, probe="channel", relu="exact", checkpoint="none")
MODES = {"exact": table_timing.EXACT, XCONV16.label: table_timing.gradient_overrides(XCONV16)}


def test_every_mode_is_timed_on_the_same_batch_and_written(tmp_path):
    rows = table_timing.time_table("table1_mnist", MODES, repeats=2, warmup=1, overrides=SMALL, settings="batch_size=8")
    assert [row["mode"] for row in rows] == list(MODES)
    assert {row["batch_shape"] for row in rows} == {"8x1x28x28"} and {row["settings"] for row in rows} == {"batch_size=8"}
    assert rows[0]["ratio_vs_exact"] == 1.0 and all(row["median_step_ms"] > 0 for row in rows)
    md, written = table_timing.write(rows, tmp_path / "timing", "python scripts/table_timing.py", 2)
    assert [(record["settings"], record["mode"]) for record in csv.DictReader(written.open())] == [
        ("batch_size=8", mode) for mode in MODES]
    assert "| table1_mnist | batch_size=8 | 8x1x28x28 | XConv r=16 channel |" in md.read_text()


def test_rows_are_grouped_by_settings_with_exact_first_and_their_overrides_give_their_mode():
    gradients = [Gradient("xconv+checkpoint", 16, "channel", "exact", "sqrt"),
                 Gradient("xconv", 4, "channel", "bit", "none", "compact"),
                 Gradient("exact", 0, "", "exact", "none", "lossless"),  # as Gradient.of records exact rows
                 Gradient("exact", 0, "", "exact", "none")]
    rows = [Row((32,), gradients[0]), Row((32,), gradients[1]), Row((128,), gradients[2]), Row((128,), gradients[3])]
    table = Table("table1_mnist", "classification", ["data.batch_size"], rows)
    groups = table_timing.row_groups(table)
    assert [(text, overrides, list(modes)) for text, overrides, modes in groups] == [
        ("batch_size=32", ("data.batch_size=32",), ["exact", gradients[0].label, gradients[1].label]),
        ("batch_size=128", ("data.batch_size=128",), ["exact", gradients[2].label])]
    for _, overrides, modes in groups:
        for label, mode in modes.items():
            config = compose_experiment("table1_mnist", (*SMALL, *overrides, *mode))
            gradient = next((g for g in gradients if g.label == label), gradients[3])
            assert (config.data.batch_size, config.probes, config.relu, config.activations, config.checkpoint) == (
                int(overrides[0].split("=")[1]), gradient.probes, gradient.relu, gradient.activations,
                gradient.checkpoint)
