"""Activation memory and step time vs depth: exact, sqrt checkpointing, XConv, and both.

The study lives in :mod:`xconv_harness.studies.depth_scaling` (its docstring has the method and the options).

    python scripts/depth_scaling.py --out results/depth_scaling.md      # the default grid, a few minutes on 1 thread
    python scripts/depth_scaling.py --depths 4,8,16,32 --models none --repeats 1 --warmup 0
"""
from xconv_harness.studies.depth_scaling import main

if __name__ == "__main__":
    main()
