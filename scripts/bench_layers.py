"""Benchmark XConv2d against the exact nn.Conv2d on ResNet-18 3x3 conv shapes.

The study lives in :mod:`xconv_harness.studies.bench_layers` (its docstring has the method and the options).

    python scripts/bench_layers.py                      # default grid, ~5-8 min on 2 CPU cores
    python scripts/bench_layers.py --resolution both --batches 32,64,128,256 \
    python scripts/bench_layers.py --shapes 16x8 --batches 16 --probes 2 --repeats 1
"""
from xconv_harness.studies.bench_layers import main

if __name__ == "__main__":
    main()
