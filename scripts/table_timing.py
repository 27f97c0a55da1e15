"""Step time ratios of each results table's gradient modes, measured side by side in one loop.

The study lives in :mod:`xconv_harness.studies.table_timing` (its docstring has the method and the options).

    python scripts/table_timing.py --out results/table_timing
"""
from xconv_harness.studies.table_timing import main

if __name__ == "__main__":
    main()
