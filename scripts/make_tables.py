"""The paper's application tables and figures, from the summaries of harness runs.

The study lives in :mod:`xconv_harness.studies.make_tables` (its docstring has the method and the options).

    python scripts/make_tables.py multirun/cpu_table1_fashion --copy-runs   # new runs -> results/
    python scripts/make_tables.py results/runs --headline                   # regenerate every table
"""
from xconv_harness.studies.make_tables import main

if __name__ == "__main__":
    main()
