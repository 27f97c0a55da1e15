"""scripts/table_timing.py: every mode of a table timed on one batch in one loop, written for the headline."""
import csv

from xconv_harness.config_files import compose_experiment
from xconv_harness.studies import table_timing

SMALL = ("data=digits", "data.batch_size=8", "data.train_subset=64")


def test_every_mode_is_timed_on_the_same_batch_and_written(tmp_path):
    rows = table_timing.time_table("table1_mnist", table_timing.MODES, repeats=2, warmup=1, overrides=SMALL)
    assert [row["mode"] for row in rows] == list(table_timing.MODES)
    assert {row["batch_shape"] for row in rows} == {"8x1x28x28"}
    assert rows[0]["ratio_vs_exact"] == 1.0 and all(row["median_step_ms"] > 0 for row in rows)
    md, written = table_timing.write(rows, tmp_path / "timing", "python scripts/table_timing.py", 2)
    assert [record["mode"] for record in csv.DictReader(written.open())] == list(table_timing.MODES)
    assert "| table1_mnist | 8x1x28x28 | XConv r=16 channel |" in md.read_text()


def test_the_modes_differ_as_named():
    built = {name: compose_experiment("table1_mnist", (*SMALL, *overrides))
             for name, overrides in table_timing.MODES.items()}
    assert [(cfg.probes, cfg.relu) for cfg in built.values()] == [(0, "exact"), (16, "exact"), (16, "bit")]
