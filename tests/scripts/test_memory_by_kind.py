"""scripts/memory_by_kind.py at a tiny size: structure and the ordering of the modes."""
from pathlib import Path



def test_memory_by_kind_table(tmp_path):
    from xconv_harness.studies.memory_by_kind import main
    out = tmp_path / "memory.md"
    text = main(["--batch", "2", "--size", "64", "--probes", "4", "--out", str(out)])
    assert out.read_text() == text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert {"Conv2d", "ReLU", "BatchNorm2d", "**total**"} <= set(rows)
    exact, sketched, with_bits, lossless, compact = (float(cell.strip(" *"))
                                                     for cell in rows["**total**"].split("|")[2:7])
    assert compact < lossless < with_bits < sketched < exact
    maxpool = [float(cell) for cell in rows["MaxPool2d"].split("|")[2:7]]
    batchnorm = [float(cell) for cell in rows["BatchNorm2d"].split("|")[2:7]]
    assert maxpool[3] < maxpool[0] / 8 and batchnorm[4] < batchnorm[0] / 3
    conv_exact, conv_sketched = (float(c) for c in rows["Conv2d"].split("|")[2:4])
    # with 1-bit ReLUs and torch's max-pool, keep once leaves the stem's ReLU plain (the max-pool keeps its
    # output anyway); with the lossless max-pool every ReLU keeps bits
    relu_exact, relu_bits, relu_lossless = (float(rows["ReLU"].split("|")[i]) for i in (2, 4, 5))
    assert conv_sketched < conv_exact and relu_bits < relu_exact and relu_lossless < relu_exact / 16
