"""Largest batch within a memory budget, exact vs XConv: the paper's max-batch tables (PAPER.md §2.1).

The study lives in :mod:`xconv_harness.studies.max_batch` (its docstring has the method and the options).

    python scripts/max_batch.py --out results/max_batch        # default rows, ~8 CPU-minutes on 1 thread
    python scripts/max_batch.py --rows squeezenet1_0@512:1/2 --dtypes fp32 --start 1 --measure peak
"""
from xconv_harness.studies.max_batch import main

if __name__ == "__main__":
    main()
