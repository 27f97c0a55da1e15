"""scripts/network_memory.py at a tiny size: files, modes, the never-above-exact rule, two counters agreeing."""
from __future__ import annotations

import csv


def test_network_memory_at_a_tiny_size(tmp_path):
    from xconv_harness.studies.network_memory import MODES, main

    out = tmp_path / "network_memory"
    rows = main(["--networks", "resnet18,MnistNet", "--batch", "2", "--size", "32", "--probes", "4",
                 "--repeats", "1", "--warmup", "0", "--out", str(out)])
    assert {row.mode for row in rows} == {mode.name for mode in MODES}
    with open(out.with_suffix(".csv")) as handle:
        assert len(list(csv.DictReader(handle))) == len(rows) == 2 * len(MODES)
    assert out.with_suffix(".png").stat().st_size > 0
    text = out.with_suffix(".md").read_text()
    assert "Above exact in any mode: none." in text
    by = {(row.network, row.mode): row for row in rows}
    for network in ("resnet18", "MnistNet"):
        exact = by[network, "exact"]
        for mode in ("xconv", "lossless", "xconv + lossless", "xconv + compact"):
            row = by[network, mode]
            assert row.kept == row.saved, (network, mode)  # the hooks and the graph walk agree
            assert row.peak <= exact.peak, (network, mode)
        # lossless savers keep less than torch's modules (ReLU bits, pool offsets), compact less again
        assert by[network, "lossless"].peak < exact.peak
        assert by[network, "xconv + compact"].peak <= by[network, "xconv + lossless"].peak
    assert by["resnet18", "xconv + compact"].peak < by["resnet18", "xconv + lossless"].peak  # BatchNorm


def test_an_unknown_network_is_refused(capsys):
    import pytest

    from xconv_harness.studies.network_memory import main

    with pytest.raises(SystemExit):
        main(["--networks", "resnet999"])
    assert "--networks=resnet999: not a network" in capsys.readouterr().err
