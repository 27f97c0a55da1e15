"""Per-weight XConv gradient estimates and gradient std vs batch size on the paper's CIFAR conv net.

The study lives in :mod:`xconv_harness.studies.gradient_estimates` (its docstring has the method and the options).

    python scripts/gradient_estimates.py                     # default scale, ~7 min on one thread
    python scripts/gradient_estimates.py --batch 40 --subbatches 8 --probes 64 --channel-probes 16 \
"""
from xconv_harness.studies.gradient_estimates import main

if __name__ == "__main__":
    main()
