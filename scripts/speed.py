"""Forward + backward time, XConv vs exact: one conv layer over a grid, and every task model.

The study lives in :mod:`xconv_harness.studies.speed` (its docstring has the method and the options).

    python scripts/speed.py --out results/speed             # default subset, < 10 min on 1 thread
    python scripts/speed.py --channels 8 --sizes 8 --batches 4 --probes 2 --models MnistNet --repeats 1
"""
from xconv_harness.studies.speed import main

if __name__ == "__main__":
    main()
