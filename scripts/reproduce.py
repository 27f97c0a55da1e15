"""Rerun the application tables from a clean checkout: each table's sweeps, then make_tables.

The study lives in :mod:`xconv_harness.studies.reproduce` (its docstring has the method and the options).

    python scripts/reproduce.py --list              # the exact commands
    python scripts/reproduce.py cpu_segmentation    # run one table
"""
from xconv_harness.studies.reproduce import main

if __name__ == "__main__":
    main()
