"""Whole-network activation memory and step time: exact, XConv, lossless and compact savers, checkpointing.

The study lives in :mod:`xconv_harness.studies.network_memory` (its docstring has the method and the options).

    python scripts/network_memory.py --out results/network_memory
"""
from xconv_harness.studies.network_memory import main

if __name__ == "__main__":
    main()
